//! The plugin contract (`wit/`): it parses, carries its version, offers the
//! three worlds with the exports the host expects, and documents every item.

use std::path::Path;

use wit_parser::{Resolve, WorldItem, WorldKey};

fn load() -> (Resolve, wit_parser::PackageId) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(&dir)
        .unwrap_or_else(|e| panic!("wit/ does not parse: {e:#}"));
    (resolve, pkg)
}

fn interface_name(resolve: &Resolve, key: &WorldKey, item: &WorldItem) -> Option<String> {
    match (key, item) {
        (_, WorldItem::Interface { id, .. }) => resolve.interfaces[*id].name.clone(),
        (WorldKey::Name(name), _) => Some(name.clone()),
        _ => None,
    }
}

#[test]
fn package_is_versioned() {
    let (resolve, pkg) = load();
    let name = &resolve.packages[pkg].name;
    assert_eq!(name.to_string(), "gateway:plugin@0.2.0");
}

#[test]
fn worlds_export_and_import_what_the_host_expects() {
    let (resolve, pkg) = load();
    let host_imports = ["config", "http", "secrets", "kv", "log", "clock", "crypto"];
    for (world, export, extra_imports) in [
        ("llm-provider", "llm", &[][..]),
        ("channel", "messaging", &["mail"][..]),
        ("webhook", "webhooks", &[][..]),
    ] {
        let id = resolve
            .select_world(&[pkg], Some(world))
            .unwrap_or_else(|e| panic!("world {world}: {e:?}"));
        let w = &resolve.worlds[id];
        let exports: Vec<_> = w
            .exports
            .iter()
            .filter_map(|(k, i)| interface_name(&resolve, k, i))
            .collect();
        assert_eq!(exports, [export], "{world} exports");
        let imports: Vec<_> = w
            .imports
            .iter()
            .filter_map(|(k, i)| interface_name(&resolve, k, i))
            .collect();
        for needed in host_imports.iter().chain(extra_imports) {
            assert!(
                imports.iter().any(|i| i == needed),
                "{world} must import {needed}: {imports:?}"
            );
        }
        assert!(w.docs.contents.is_some(), "world {world} is undocumented");
    }
}

#[test]
fn every_item_is_documented_and_errors_are_variants() {
    let (resolve, pkg) = load();
    for (_, id) in &resolve.packages[pkg].interfaces {
        let iface = &resolve.interfaces[*id];
        let name = iface.name.clone().unwrap_or_default();
        assert!(
            iface.docs.contents.is_some(),
            "interface {name} is undocumented"
        );
        for (fname, f) in &iface.functions {
            assert!(f.docs.contents.is_some(), "{name}.{fname} is undocumented");
        }
        for (tname, tid) in &iface.types {
            let ty = &resolve.types[*tid];
            // Types brought in with `use` are documented where they are defined.
            let used = matches!(
                ty.kind,
                wit_parser::TypeDefKind::Type(wit_parser::Type::Id(_))
            );
            if !used {
                assert!(ty.docs.contents.is_some(), "{name}.{tname} is undocumented");
            }
        }
        let has_functions = !iface.functions.is_empty();
        let has_error_variant = iface.types.iter().any(|(t, tid)| {
            t.ends_with("-error")
                && matches!(
                    resolve.types[*tid].kind,
                    wit_parser::TypeDefKind::Variant(_)
                )
        });
        if has_functions && !matches!(name.as_str(), "log" | "clock" | "config" | "crypto") {
            assert!(
                has_error_variant,
                "interface {name} reports failure without its own error variant"
            );
        }
    }
}
