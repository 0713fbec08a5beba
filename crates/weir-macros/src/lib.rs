//! `#[weir::task]`: turns an `async fn` into a registered weir task.
//!
//! For `async fn double(x: u64) -> Result<u64>` it generates:
//! - `fn double(x: u64) -> weir::TaskCall<u64>`: awaiting the call inside a task makes a child
//!   action; outside a run it runs the body directly;
//! - a hidden argument struct (serde, named fields, unknown fields refused) so inputs are
//!   `{"x": ...}` in JSON and MessagePack;
//! - a `static` task definition registered with `inventory`, so any process of the binary finds
//!   the task by name.
//!
//! Misuse is a compile error pointing at the mistake: a non-async function, methods, generics,
//! non-identifier parameters, argument or output types that are not serde types, an unknown
//! environment, a malformed duration or size.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, MetaNameValue, Pat, ReturnType, Token, Type};

/// Marks an async function as a weir task. See the crate docs.
///
/// Settings: `env = ENV` (a `static` `TaskEnvironment` or `LazyLock<TaskEnvironment>`; the
/// `default` environment when omitted), `retries = 3` or `retries = RetryPolicy::..`,
/// `timeout = "10m"` or `timeout = Timeouts::..`, `max_inline_io = "20MiB"`,
/// `cache = "auto" | "disable" | "<version>"` or a `CachePolicy`, `short_name = "name"`.
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_task(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct Settings {
    env: Option<Expr>,
    retries: Option<TokenStream2>,
    timeout: Option<TokenStream2>,
    max_inline_io: Option<TokenStream2>,
    cache: Option<TokenStream2>,
    short_name: Option<String>,
}

fn lit_str(e: &Expr) -> Option<&syn::LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        _ => None,
    }
}

/// Durations and sizes are parsed by the same functions the runtime uses, at compile time.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    weir_core::spec::parse_duration(s).map(|d| d.as_millis() as u64)
}

use weir_core::spec::parse_size;

fn parse_settings(attr: TokenStream2) -> syn::Result<Settings> {
    let args = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr)?;
    let mut s = Settings {
        env: None,
        retries: None,
        timeout: None,
        max_inline_io: None,
        cache: None,
        short_name: None,
    };
    for nv in args {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        let v = &nv.value;
        match key.as_str() {
            "env" => s.env = Some(v.clone()),
            "retries" => {
                s.retries = Some(match v {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(i), ..
                    }) => {
                        let n: u32 = i.base10_parse()?;
                        quote!(::weir::__private::spec::RetryPolicy::retries(#n))
                    }
                    e => {
                        quote!(::core::convert::Into::<::weir::__private::spec::RetryPolicy>::into(#e))
                    }
                })
            }
            "timeout" => {
                s.timeout = Some(match lit_str(v) {
                    Some(l) => {
                        let ms = parse_duration_ms(&l.value()).map_err(|e| {
                            syn::Error::new(l.span(), format!("invalid timeout: {e}"))
                        })?;
                        quote!(::weir::__private::spec::Timeouts::new().max_runtime(::std::time::Duration::from_millis(#ms)))
                    }
                    None => {
                        quote!(::core::convert::Into::<::weir::__private::spec::Timeouts>::into(#v))
                    }
                })
            }
            "max_inline_io" => {
                s.max_inline_io = Some(match v {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(l), ..
                    }) => {
                        let n = parse_size(&l.value()).map_err(|e| {
                            syn::Error::new(l.span(), format!("invalid max_inline_io: {e}"))
                        })?;
                        quote!(#n)
                    }
                    e => quote!((#e) as u64),
                })
            }
            "cache" => {
                s.cache = Some(match lit_str(v) {
                    Some(l) => quote!(::weir::__private::spec::CachePolicy::from(#l)),
                    None => {
                        quote!(::core::convert::Into::<::weir::__private::spec::CachePolicy>::into(#v))
                    }
                })
            }
            "short_name" => {
                s.short_name = Some(
                    lit_str(v)
                        .ok_or_else(|| {
                            syn::Error::new(v.span(), "short_name must be a string literal")
                        })?
                        .value(),
                )
            }
            _ => {
                return Err(syn::Error::new(
                    nv.path.span(),
                    "unknown #[weir::task] setting; expected env, retries, timeout, max_inline_io, cache or short_name",
                ));
            }
        }
    }
    Ok(s)
}

/// The `auto` cache version: FNV-1a (64 bit) of the function's signature and body tokens. Tokens
/// carry no whitespace or comments, so only a change of code changes the version; and only this
/// function's tokens take part, so editing another task never changes it.
fn source_hash(tokens: &TokenStream2) -> String {
    let text = tokens.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A function's parameters, in declaration order and in canonical MessagePack key order (short
/// names first, then bytewise: the generated argument structs declare fields in this order so
/// that encoded inputs are canonical without re-sorting).
struct Params {
    names: Vec<syn::Ident>,
    types: Vec<Type>,
    sorted_names: Vec<syn::Ident>,
    sorted_types: Vec<Type>,
}

fn parse_params(sig: &syn::Signature, what: &str, owned_only: bool) -> syn::Result<Params> {
    let mut names = Vec::new();
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    format!("{what} cannot be a method; make it a free function"),
                ));
            }
            FnArg::Typed(pt) => {
                let Pat::Ident(id) = pt.pat.as_ref() else {
                    return Err(syn::Error::new(
                        pt.pat.span(),
                        format!("{what} parameters must be plain names (they become input names)"),
                    ));
                };
                if let (true, Type::Reference(r)) = (owned_only, pt.ty.as_ref()) {
                    return Err(syn::Error::new(
                        r.span(),
                        format!(
                            "{what} parameters must be owned values (serde types), not references"
                        ),
                    ));
                }
                names.push(id.ident.clone());
                types.push((*pt.ty).clone());
            }
        }
    }
    let mut sorted: Vec<(syn::Ident, Type)> =
        names.iter().cloned().zip(types.iter().cloned()).collect();
    sorted.sort_by_key(|(n, _)| {
        let n = n.to_string();
        (n.len(), n)
    });
    let (sorted_names, sorted_types) = sorted.into_iter().unzip();
    Ok(Params {
        names,
        types,
        sorted_names,
        sorted_types,
    })
}

/// The output type and whether the body returns a `Result`.
fn output_type(ret: &ReturnType) -> (Type, bool) {
    match ret {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => {
            if let Type::Path(p) = ty.as_ref()
                && let Some(last) = p.path.segments.last()
                && last.ident == "Result"
                && let syn::PathArguments::AngleBracketed(args) = &last.arguments
                && let Some(syn::GenericArgument::Type(ok)) = args.args.first()
            {
                return (ok.clone(), true);
            }
            ((**ty).clone(), false)
        }
    }
}

fn expand_task(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let settings = parse_settings(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "#[weir::task] functions must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "#[weir::task] functions cannot be generic: a task has one concrete interface",
        ));
    }
    let name = &sig.ident;
    let name_str = name.to_string();
    let vis = &func.vis;
    let attrs = &func.attrs;
    let body_fn = format_ident!("__weir_body_{}", name);
    let args_ty = format_ident!("__WeirArgs_{}", name);
    let def_ident = format_ident!("__WEIR_TASK_{}", name);

    let Params {
        names: arg_names,
        types: arg_types,
        sorted_names,
        sorted_types,
    } = parse_params(sig, "#[weir::task]", true)?;
    let (out_ty, fallible) = output_type(&sig.output);
    let ret = &sig.output;
    let body = &func.block;
    let params: Vec<String> = arg_names.iter().map(|i| i.to_string()).collect();

    let env = match &settings.env {
        Some(e) => quote_spanned!(e.span()=> ::weir::__private::env_ref(&#e)),
        None => quote!(::weir::__private::default_env()),
    };
    let retry = settings
        .retries
        .unwrap_or_else(|| quote!(::core::default::Default::default()));
    let timeouts = settings
        .timeout
        .unwrap_or_else(|| quote!(::core::default::Default::default()));
    let inline = match settings.max_inline_io {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let cache = match settings.cache {
        Some(t) => quote!(::core::option::Option::Some(#t)),
        None => quote!(::core::option::Option::None),
    };
    let short = match settings.short_name {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    let call_body = if fallible {
        quote!(#body_fn(#(#arg_names),*).await.map_err(::core::convert::Into::into))
    } else {
        quote!(::core::result::Result::Ok(#body_fn(#(#arg_names),*).await))
    };
    let type_checks = arg_types.iter().chain(std::iter::once(&out_ty)).map(|ty| {
        quote_spanned! {ty.span()=>
            ::weir::__private::assert_serde::<#ty>();
        }
    });
    let source_hash = source_hash(&quote!(#sig #body));
    let interface = {
        let params: Vec<String> = arg_names
            .iter()
            .zip(&arg_types)
            .map(|(n, t)| format!("{n}: {}", quote!(#t)))
            .collect();
        format!("({}) -> {}", params.join(", "), quote!(#out_ty))
    };
    let fn_doc = format!(
        "Calls task `{name_str}`: awaited inside a task it runs as a child action, outside a run it runs directly."
    );
    let _ = Span::call_site();

    Ok(quote! {
        #(#attrs)*
        #[allow(clippy::too_many_arguments)]
        async fn #body_fn(#(#arg_names: #arg_types),*) #ret #body

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(::weir::__private::serde::Serialize, ::weir::__private::serde::Deserialize)]
        #[serde(crate = "::weir::__private::serde", deny_unknown_fields)]
        struct #args_ty { #(#sorted_names: #sorted_types),* }

        impl ::weir::__private::TaskArgs for #args_ty {
            type Output = #out_ty;
            fn run(self) -> ::weir::__private::BoxFuture<'static, ::weir::Result<#out_ty>> {
                let #args_ty { #(#arg_names),* } = self;
                ::std::boxed::Box::pin(async move { #call_body })
            }
        }

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #def_ident: ::weir::__private::TaskDef = ::weir::__private::TaskDef {
            name: #name_str,
            module: ::core::module_path!(),
            settings: ::weir::__private::Settings::Static {
                env: || #env,
                config: || ::weir::__private::TaskConfig {
                    retry: #retry,
                    timeouts: #timeouts,
                    max_inline_io: #inline,
                    cache: #cache,
                    short_name: #short,
                },
            },
            invoke: ::weir::__private::Invoke::Static(|inputs| ::std::boxed::Box::pin(async move {
                let args: #args_ty = ::weir::__private::decode_inputs(&inputs, #name_str)?;
                let out = ::weir::__private::TaskArgs::run(args).await?;
                ::weir::__private::encode_output(&out, #name_str)
            })),
            inputs_from_json: ::weir::__private::codec::json_to_canonical::<#args_ty>,
            params: &[#(#params),*],
            source_hash: #source_hash,
            interface: #interface,
            resolved: ::std::sync::OnceLock::new(),
        };

        ::weir::__private::inventory::submit! { ::weir::__private::Registration(&#def_ident) }

        const _: () = {
            #[allow(dead_code)]
            fn __weir_type_checks() { #(#type_checks)* }
        };

        #[doc = #fn_doc]
        #vis fn #name(#(#arg_names: #arg_types),*) -> ::weir::TaskCall<#out_ty> {
            ::weir::TaskCall::new(&#def_ident, #args_ty { #(#arg_names),* })
        }
    })
}

/// Marks a function as a trace (SPEC §6.4): it runs in the calling task's process, and its
/// inputs and output (or error) are recorded as a checkpoint when it finishes. When the task is
/// retried or recovered, a recorded trace returns its recorded output instead of running again.
///
/// Works on `async fn name(..) -> Result<T>` (or a plain `T`) and on a function returning
/// `impl Stream<Item = T>`: a stream's items pass through while being buffered, are recorded at
/// its end, and are replayed without running the stream again. Outside a task a trace is a plain
/// call. A trace may not call tasks.
#[proc_macro_attribute]
pub fn trace(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_trace(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `Some(item type)` if the return type is `impl Stream<Item = T>`.
fn stream_item(ret: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = ret else {
        return None;
    };
    let Type::ImplTrait(it) = ty.as_ref() else {
        return None;
    };
    it.bounds.iter().find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else {
            return None;
        };
        let last = t.path.segments.last()?;
        if last.ident != "Stream" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|a| match a {
            syn::GenericArgument::AssocType(at) if at.ident == "Item" => Some(at.ty.clone()),
            _ => None,
        })
    })
}

fn expand_trace(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    if !attr.is_empty() {
        return Err(syn::Error::new(
            attr.span(),
            "#[weir::trace] takes no settings",
        ));
    }
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "#[weir::trace] functions cannot be generic",
        ));
    }
    let name = &sig.ident;
    let name_str = name.to_string();
    let vis = &func.vis;
    let attrs = &func.attrs;
    let body = &func.block;
    let ret = &sig.output;
    let body_fn = format_ident!("__weir_trace_body_{}", name);
    let args_ty = format_ident!("__WeirTraceArgs_{}", name);
    let Params {
        names: arg_names,
        types: arg_types,
        sorted_names,
        sorted_types,
    } = parse_params(sig, "#[weir::trace]", false)?;
    let encode = quote! {
        {
            #[derive(::weir::__private::serde::Serialize)]
            #[serde(crate = "::weir::__private::serde")]
            #[allow(non_camel_case_types)]
            struct #args_ty<'a> { #(#sorted_names: &'a #sorted_types),* }
            ::weir::__private::codec::encode(&#args_ty { #(#arg_names: &#arg_names),* })
        }
    };

    if let Some(item_ty) = stream_item(ret) {
        if sig.asyncness.is_some() {
            return Err(syn::Error::new(
                sig.asyncness.span(),
                "a stream #[weir::trace] is a plain fn returning `impl Stream<Item = T>`",
            ));
        }
        return Ok(quote! {
            ::weir::__private::inventory::submit! {
                ::weir::__private::TraceRegistration { name: #name_str, module: ::core::module_path!() }
            }

            #(#attrs)*
            fn #body_fn(#(#arg_names: #arg_types),*) #ret #body

            #vis fn #name(#(#arg_names: #arg_types),*) -> impl ::weir::__private::futures::Stream<Item = #item_ty> + Send + 'static {
                let inputs = #encode;
                ::weir::__private::trace_stream(#name_str, inputs, move || #body_fn(#(#arg_names),*))
            }
        });
    }
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "#[weir::trace] functions must be `async fn` (or return `impl Stream`)",
        ));
    }
    let (out_ty, fallible) = output_type(ret);
    let call = if fallible {
        quote!(::weir::__private::trace_call(#name_str, inputs, async move { #body_fn(#(#arg_names),*).await.map_err(::core::convert::Into::into) }).await)
    } else {
        quote!(::weir::__private::trace_call_infallible(#name_str, inputs, #body_fn(#(#arg_names),*)).await)
    };
    let outer_ret = if fallible {
        quote!(-> ::weir::Result<#out_ty>)
    } else {
        quote!(#ret)
    };
    Ok(quote! {
        ::weir::__private::inventory::submit! {
            ::weir::__private::TraceRegistration { name: #name_str, module: ::core::module_path!() }
        }

        #(#attrs)*
        async fn #body_fn(#(#arg_names: #arg_types),*) #ret #body

        #vis async fn #name(#(#arg_names: #arg_types),*) #outer_ret {
            let inputs = #encode;
            #call
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(src: &str) -> String {
        let f: ItemFn = syn::parse_str(src).unwrap();
        let (sig, block) = (&f.sig, &f.block);
        source_hash(&quote!(#sig #block))
    }

    #[test]
    fn auto_version_ignores_whitespace_and_comments_but_not_code() {
        let base = hash_of("async fn t(x: u64) -> Result<u64> { Ok(x * 2) }");
        let reformatted = hash_of(
            "async fn t(x: u64)
                -> Result<u64>
            {
                // doubles it
                Ok(x  *  2) /* still */
            }",
        );
        assert_eq!(base, reformatted);
        assert_ne!(
            base,
            hash_of("async fn t(x: u64) -> Result<u64> { Ok(x * 3) }")
        );
        assert_ne!(
            base,
            hash_of("async fn t(x: u32) -> Result<u64> { Ok(x as u64 * 2) }")
        );
        // a doc comment is an attribute, outside the hashed tokens
        let f: ItemFn =
            syn::parse_str("/// docs\nasync fn t(x: u64) -> Result<u64> { Ok(x * 2) }").unwrap();
        let (sig, block) = (&f.sig, &f.block);
        assert_eq!(base, source_hash(&quote!(#sig #block)));
    }

    #[test]
    fn misuse_is_a_compile_error_with_a_message() {
        let err = |attr: TokenStream2, item: &str| {
            expand_task(attr, item.parse().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(err(quote!(), "fn t(x: u64) -> u64 { x }").contains("must be `async fn`"));
        assert!(err(quote!(), "async fn t(x: &str) -> u64 { 1 }").contains("owned values"));
        assert!(err(quote!(), "async fn t<T>(x: T) -> u64 { 1 }").contains("cannot be generic"));
        assert!(
            err(quote!(timeout = "10 parsecs"), "async fn t() -> u64 { 1 }")
                .contains("invalid timeout")
        );
        assert!(
            err(quote!(colour = "red"), "async fn t() -> u64 { 1 }")
                .contains("unknown #[weir::task] setting")
        );
        assert!(
            expand_trace(quote!(), "fn t(x: u64) -> u64 { x }".parse().unwrap())
                .unwrap_err()
                .to_string()
                .contains("async fn")
        );
    }
}
