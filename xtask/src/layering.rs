//! Which cairn crate may depend on which: the layer table of ARCHITECTURE.md, checked against
//! `cargo metadata`.

use serde_json::Value;

/// Each workspace crate and the cairn crates it may use as normal or build dependencies.
/// Dev-dependencies are not checked: tests may use whatever helps them.
const ALLOWED: &[(&str, &[&str])] = &[
    // The base: the digest vocabulary the index and store crates share, so they need no
    // mapping between two copies of it.
    ("cairn-digest", &[]),
    // Layer 0: know nothing of each other.
    ("cairn-cache", &[]),
    ("cairn-index", &["cairn-digest"]),
    ("cairn-chunk-store", &["cairn-digest"]),
    // The NBD protocol and server: knows exports, not chunks.
    ("cairn-nbd", &[]),
    // Layer 1: where they meet.
    (
        "cairn-reader",
        &[
            "cairn-digest",
            "cairn-cache",
            "cairn-index",
            "cairn-chunk-store",
            // Optional (feature `nbd`): the reader as an NBD export.
            "cairn-nbd",
        ],
    ),
    (
        "cairn-backup",
        &["cairn-digest", "cairn-index", "cairn-chunk-store"],
    ),
    // Layer 2: the command.
    (
        "cairn",
        &[
            "cairn-backup",
            "cairn-digest",
            "cairn-cache",
            "cairn-index",
            "cairn-chunk-store",
            "cairn-nbd",
            "cairn-reader",
        ],
    ),
    ("xtask", &[]),
];

/// The forbidden edges in `metadata` (the JSON of `cargo metadata --format-version 1`), one
/// sentence each.
///
/// # Errors
/// When the metadata does not have the expected shape, or names a workspace crate the table
/// does not know (the table must be extended deliberately).
pub(crate) fn check(metadata: &Value) -> Result<Vec<String>, String> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .ok_or("cargo metadata has no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata has no packages")?;
    let workspace_names: Vec<&str> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id)))
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut violations = Vec::new();
    for package in packages {
        let Some(id) = package["id"].as_str() else {
            continue;
        };
        if !members.contains(&id) {
            continue;
        }
        let name = package["name"].as_str().ok_or("a package without a name")?;
        let allowed = ALLOWED
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
            .map(|(_, allowed)| *allowed)
            .ok_or_else(|| {
                format!(
                    "workspace crate `{name}` is not in the layer table of xtask/src/layering.rs"
                )
            })?;
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dependency["name"].as_str().unwrap_or_default();
            let kind = dependency["kind"].as_str();
            let is_dev = kind == Some("dev");
            let is_ours = workspace_names.contains(&dep_name) || dep_name.starts_with("cairn");
            if is_ours && !is_dev && !allowed.contains(&dep_name) {
                violations.push(format!(
                    "`{name}` depends on `{dep_name}`{}, which its layer forbids (allowed: {})",
                    kind.map(|k| format!(" ({k} dependency)"))
                        .unwrap_or_default(),
                    if allowed.is_empty() {
                        "no cairn crate".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ));
            }
        }
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(edges: &[(&str, &str, Option<&str>)]) -> Value {
        let names = [
            "cairn-backup",
            "cairn-digest",
            "cairn-cache",
            "cairn-index",
            "cairn-chunk-store",
            "cairn-reader",
            "cairn",
            "xtask",
        ];
        let packages: Vec<Value> = names
            .iter()
            .map(|name| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(from, _, _)| from == name)
                    .map(|(_, to, kind)| json!({ "name": to, "kind": kind }))
                    .collect();
                json!({ "id": format!("id-{name}"), "name": name, "dependencies": deps })
            })
            .collect();
        let members: Vec<String> = names.iter().map(|n| format!("id-{n}")).collect();
        json!({ "workspace_members": members, "packages": packages })
    }

    #[test]
    fn allowed_edges_pass() {
        let m = metadata(&[
            ("cairn-cache", "tokio", None),
            ("cairn-reader", "cairn-cache", None),
            ("cairn-reader", "cairn-index", None),
            ("cairn-index", "cairn-digest", None),
            ("cairn-chunk-store", "cairn-digest", None),
            ("cairn", "cairn-reader", None),
            ("cairn-index", "cairn-chunk-store", Some("dev")),
        ]);
        assert_eq!(check(&m).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn layer_zero_edges_fail() {
        let m = metadata(&[
            ("cairn-index", "cairn-cache", None),
            ("cairn-chunk-store", "cairn-index", Some("build")),
            ("cairn-cache", "cairn-reader", None),
            // The digest crate is the base: it uses no cairn crate, and the cache needs none.
            ("cairn-digest", "cairn-index", None),
            ("cairn-cache", "cairn-digest", None),
        ]);
        let violations = check(&m).unwrap();
        assert_eq!(violations.len(), 5, "{violations:?}");
        assert!(
            violations
                .iter()
                .any(|v| v.contains("`cairn-index` depends on `cairn-cache`"))
        );
    }

    #[test]
    fn xtask_and_layer_one_edges_fail() {
        let m = metadata(&[
            ("xtask", "cairn-index", None),
            ("cairn-reader", "cairn", None),
            // The layer-1 crates stand beside each other: the backup engine needs no cache.
            ("cairn-backup", "cairn-reader", None),
            ("cairn-backup", "cairn-cache", None),
        ]);
        assert_eq!(check(&m).unwrap().len(), 4);
    }

    #[test]
    fn unknown_workspace_crate_is_an_error() {
        let mut m = metadata(&[]);
        m["packages"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "id": "id-new", "name": "cairn-new", "dependencies": [] }));
        m["workspace_members"]
            .as_array_mut()
            .unwrap()
            .push(json!("id-new"));
        assert!(check(&m).unwrap_err().contains("cairn-new"));
    }
}
