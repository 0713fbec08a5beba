//! Python values ↔ canonical MessagePack (SPEC §5.1): the same bytes as the equivalent Rust
//! values, hence the same action ids and cache keys.
//!
//! | Python | MessagePack | Rust |
//! |---|---|---|
//! | `None` | nil | `()`, `Option::None` |
//! | `bool` | bool | `bool` |
//! | `int` | int, smallest form | integers |
//! | `float` | float 64 | `f64` |
//! | `str` | str | `String` |
//! | `bytes`, `bytearray` | bin | `serde_bytes::ByteBuf` |
//! | `list`, `tuple` | array | `Vec`, tuples |
//! | `dict` | map, sorted by key bytes | `BTreeMap`, `HashMap` |
//! | dataclass, pydantic model | map of field name → value | struct with named fields |

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use rmpv::Value;

/// Deepest nesting accepted (the codec's limit, `weir_core::codec`).
const MAX_DEPTH: usize = 1000;

/// Encodes a Python value canonically; a value that cannot cross names its place in `what`
/// (`inputs of task env.fetch`, say) and the path inside it.
pub fn encode(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let mut path = String::new();
    let value = to_value(obj, &mut path, 0).map_err(|msg| {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" at {path}")
        };
        PyTypeError::new_err(format!("cannot pass the {what}{at}: {msg}"))
    })?;
    let mut raw = Vec::new();
    rmpv::encode::write_value(&mut raw, &value)
        .map_err(|e| PyValueError::new_err(format!("cannot encode the {what}: {e}")))?;
    weir_core::codec::canonicalize(raw)
        .map_err(|e| PyValueError::new_err(format!("cannot encode the {what}: {e}")))
}

fn to_value(obj: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    if obj.is_instance_of::<PyBool>() {
        return Ok(Value::Boolean(
            obj.extract::<bool>().map_err(|e| e.to_string())?,
        ));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = obj.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(format!(
            "the int {obj} does not fit in 64 bits (MessagePack integers are -2**63 .. 2**64-1)"
        ));
    }
    if obj.is_instance_of::<PyFloat>() {
        return Ok(Value::F64(obj.extract::<f64>().map_err(|e| e.to_string())?));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str().map_err(|e| e.to_string())?.into()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Binary(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Binary(b.to_vec()));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return seq(list.iter(), path, depth);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return seq(tuple.iter(), path, depth);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = to_value(&k, path, depth + 1)?;
            let len = path.len();
            path.push_str(&format!("[{}]", k.repr().map_err(|e| e.to_string())?));
            let value = to_value(&v, path, depth + 1)?;
            path.truncate(len);
            entries.push((key, value));
        }
        return Ok(Value::Map(entries));
    }
    let py = obj.py();
    // A value that says how it crosses (weir.io.File and Dir: their reference).
    if obj.hasattr("__weir_value__").unwrap_or(false)
        && !obj.is_instance_of::<pyo3::types::PyType>()
    {
        let value = obj
            .call_method0("__weir_value__")
            .map_err(|e| e.to_string())?;
        return to_value(&value, path, depth + 1);
    }
    // A dataclass: its fields in order, as a Rust struct with named fields.
    if obj.hasattr("__dataclass_fields__").unwrap_or(false)
        && !obj.is_instance_of::<pyo3::types::PyType>()
    {
        let dataclasses = py.import("dataclasses").map_err(|e| e.to_string())?;
        let fields = dataclasses
            .call_method1("fields", (obj,))
            .map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for field in fields.try_iter().map_err(|e| e.to_string())? {
            let field = field.map_err(|e| e.to_string())?;
            let name: String = field
                .getattr("name")
                .and_then(|n| n.extract())
                .map_err(|e| e.to_string())?;
            let v = obj.getattr(name.as_str()).map_err(|e| e.to_string())?;
            let len = path.len();
            path.push('.');
            path.push_str(&name);
            let value = to_value(&v, path, depth + 1)?;
            path.truncate(len);
            entries.push((Value::String(name.into()), value));
        }
        return Ok(Value::Map(entries));
    }
    // A pydantic model: its fields as `model_dump()` gives them.
    if obj.hasattr("model_dump").unwrap_or(false)
        && obj.get_type().hasattr("model_fields").unwrap_or(false)
    {
        let dumped = obj.call_method0("model_dump").map_err(|e| e.to_string())?;
        return to_value(&dumped, path, depth + 1);
    }
    let ty = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(format!(
        "a value of type {ty} cannot cross between tasks (supported: None, bool, int, float, str, bytes, list, tuple, dict, dataclasses and pydantic models of those)"
    ))
}

fn seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    path: &mut String,
    depth: usize,
) -> Result<Value, String> {
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        out.push(to_value(&item, path, depth + 1)?);
        path.truncate(len);
    }
    Ok(Value::Array(out))
}

/// Decodes MessagePack bytes into plain Python values (dicts, lists, ...); the Python layer
/// turns them into the annotated types.
pub fn decode<'py>(py: Python<'py>, bytes: &[u8], what: &str) -> PyResult<Bound<'py, PyAny>> {
    let value = rmpv::decode::read_value_with_max_depth(&mut &bytes[..], 2 * MAX_DEPTH + 2)
        .map_err(|e| PyValueError::new_err(format!("cannot decode the {what}: {e}")))?;
    from_value(py, &value, false)
}

fn from_value<'py>(py: Python<'py>, v: &Value, key: bool) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Nil => py.None().into_bound(py),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => n.into_pyobject(py)?.into_any(),
            (None, Some(n)) => n.into_pyobject(py)?.into_any(),
            _ => return Err(PyValueError::new_err("an integer out of range")),
        },
        Value::F32(f) => PyFloat::new(py, *f as f64).into_any(),
        Value::F64(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => match s.as_str() {
            Some(s) => PyString::new(py, s).into_any(),
            None => PyBytes::new(py, s.as_bytes()).into_any(),
        },
        Value::Binary(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let items: Vec<_> = items
                .iter()
                .map(|x| from_value(py, x, key))
                .collect::<PyResult<_>>()?;
            // A key must be hashable: an array as a key becomes a tuple.
            if key {
                PyTuple::new(py, items)?.into_any()
            } else {
                PyList::new(py, items)?.into_any()
            }
        }
        Value::Map(entries) => {
            let dict = PyDict::new(py);
            for (k, x) in entries {
                dict.set_item(from_value(py, k, true)?, from_value(py, x, false)?)?;
            }
            dict.into_any()
        }
        Value::Ext(tag, _) => {
            return Err(PyValueError::new_err(format!(
                "a MessagePack extension value (type {tag}) has no Python form"
            )));
        }
    })
}
