//! Two tasks with the same full name (same function name in one environment, in two modules)
//! would get the same action id for the same inputs: the engine refuses to open, naming both.

use std::sync::LazyLock;

use weir::prelude::*;

static ENV: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("dup"));

mod first {
    use super::ENV;
    use weir::prelude::*;

    #[weir::task(env = ENV)]
    pub async fn fetch(x: u64) -> Result<u64> {
        Ok(x + 1)
    }
}

mod second {
    use super::ENV;
    use weir::prelude::*;

    #[weir::task(env = ENV)]
    pub async fn fetch(x: u64) -> Result<u64> {
        Ok(x + 2)
    }
}

#[tokio::test]
async fn duplicate_task_names_are_refused_naming_both_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let err = weir::Runner::embedded(dir.path()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"dup.fetch\" is defined twice"), "{msg}");
    assert!(
        msg.contains("duplicate_names::first::fetch")
            && msg.contains("duplicate_names::second::fetch"),
        "{msg}"
    );
    // Nothing was created: the refusal comes before the state directory is touched.
    assert!(!dir.path().join("state.db").exists());
    // Outside a run the functions are plain calls (so they are used).
    assert_eq!(
        first::fetch(1).await.unwrap() + second::fetch(1).await.unwrap(),
        5
    );
}
