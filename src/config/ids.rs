//! Deterministic entity ids, derived the way DB-less Kong derives them (UUIDv5).

use uuid::Uuid;

/// Kong's root namespace for declarative entity ids.
const KONG_NAMESPACE: Uuid = Uuid::from_u128(0xfd02801f_0957_4a15_a55a_c8d9606f30b5);

/// `generate_uuid(schema_name, key)`: a v5 id in the namespace derived from the entity name.
pub fn entity_id(entity: &str, key: &str) -> String {
    let ns = Uuid::new_v5(&KONG_NAMESPACE, entity.as_bytes());
    Uuid::new_v5(&ns, key.as_bytes()).to_string()
}

/// A plugin's cache key as Kong builds it: `plugins:<ws>:<name>:<route>:<service>:<consumer>`
/// with `*` for the (only) workspace and empty strings for unset scopes.
pub fn plugin_id(name: &str, route: &str, service: &str, consumer: &str) -> String {
    entity_id(
        "plugins",
        &format!("plugins:*:{name}:{route}:{service}:{consumer}"),
    )
}

/// Kong gives unnamed routes/services a random id; Tollgate derives one from the entity's
/// position so ids stay stable across restarts of the same file.
pub fn positional_id(entity: &str, position: &str) -> String {
    entity_id(entity, &format!("tollgate-position:{position}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_stable_and_namespaced() {
        let a = entity_id("services", "codex-service");
        assert_eq!(a, entity_id("services", "codex-service"));
        assert_ne!(a, entity_id("routes", "codex-service"));
        assert_eq!(
            Uuid::parse_str(&a).map(|u| u.get_version_num()).ok(),
            Some(5)
        );
        // Kong's plugin cache key shape for a service-scoped plugin.
        assert_eq!(
            plugin_id("file-log", "", &a, ""),
            entity_id("plugins", &format!("plugins:*:file-log::{a}:"))
        );
    }
}
