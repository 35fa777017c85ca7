//! Node names: validation and the parent/child relations xenstored's `is_valid_nodename`,
//! `get_parent` and `is_child` compute.

use crate::env::StoreError;

/// `XENSTORE_ABS_PATH_MAX` (xs_wire.h): the longest absolute node name.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX` (xs_wire.h): the longest name below a domain's home
/// (`/local/domain/<id>/`), which xenstored also enforces on absolute names.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;
/// `XENSTORE_PAYLOAD_MAX` (xs_wire.h): the largest message body. A write carries
/// `path NUL value`, so this bounds what any domain, Dom0 included, can store in one node.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;

/// The characters xenstored's `valid_chars` accepts in a node name.
fn valid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'@')
}

/// Length of the `/local/domain/<id>/` prefix of `path`, 0 if it has none: xenstored
/// measures the part after it against `XENSTORE_REL_PATH_MAX`.
fn local_domain_prefix_len(path: &str) -> usize {
    const PREFIX: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return 0;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 5 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    PREFIX.len() + digits + 1
}

/// `is_valid_nodename`: absolute, no empty component, no trailing slash except the root,
/// only `[A-Za-z0-9-/_@]`, within `XENSTORE_ABS_PATH_MAX` (and `XENSTORE_REL_PATH_MAX`
/// below a domain's home).
pub fn validate(path: &str) -> Result<(), StoreError> {
    let ok = path.starts_with('/')
        && (path == "/" || !path.ends_with('/'))
        && !path.contains("//")
        && path.len() <= XENSTORE_ABS_PATH_MAX
        && path.len() - local_domain_prefix_len(path) <= XENSTORE_REL_PATH_MAX
        && path.bytes().all(valid_char);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid)
    }
}

/// Whether `path` names a special watch node (`@introduceDomain`, `@releaseDomain`):
/// xenstored's `check_special_event` accepts any name beginning with `@` there.
pub fn is_special(path: &str) -> bool {
    path.starts_with('@')
}

/// Validation for `XS_WATCH`/`XS_UNWATCH` paths: a node name or a special `@` name.
pub fn validate_watch(path: &str) -> Result<(), StoreError> {
    if is_special(path) {
        let ok =
            path.len() > 1 && path.len() <= XENSTORE_ABS_PATH_MAX && path.bytes().all(valid_char);
        if ok {
            Ok(())
        } else {
            Err(StoreError::Invalid)
        }
    } else {
        validate(path)
    }
}

/// `get_parent`: the parent of a valid non-root path (`None` for `/`).
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of a valid non-root path.
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `parent/name` for a valid parent path and a single component.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// `path` followed by each of its ancestors up to the root.
pub fn self_and_ancestors(path: &str) -> impl Iterator<Item = &str> {
    core::iter::successors(Some(path), |p| parent(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_is_valid_nodename() {
        for ok in ["/", "/a", "/local/domain/1/device/vif/0/state", "/a-b_c@D9"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a", "a/b", "/a/", "//", "/a//b", "/a b", "/a.b", "/a\0b", "/é",
        ] {
            assert_eq!(validate(bad), Err(StoreError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn length_limits() {
        let at_max = format!("/{}", "a".repeat(XENSTORE_ABS_PATH_MAX - 1));
        assert!(
            validate(&at_max).is_err(),
            "beyond the rel limit outside a home too"
        );
        let abs_ok = format!("/{}", "a".repeat(XENSTORE_REL_PATH_MAX - 1));
        assert_eq!(validate(&abs_ok), Ok(()));
        let abs_too_long = format!("/{}", "a".repeat(XENSTORE_REL_PATH_MAX));
        assert_eq!(validate(&abs_too_long), Err(StoreError::Invalid));
        let home = "/local/domain/7/";
        let rel_ok = format!("{home}{}", "a".repeat(XENSTORE_REL_PATH_MAX));
        assert_eq!(validate(&rel_ok), Ok(()));
        let rel_bad = format!("{home}{}", "a".repeat(XENSTORE_REL_PATH_MAX + 1));
        assert_eq!(validate(&rel_bad), Err(StoreError::Invalid));
    }

    #[test]
    fn relations() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        let chain: Vec<_> = self_and_ancestors("/a/b/c").collect();
        assert_eq!(chain, ["/a/b/c", "/a/b", "/a", "/"]);
    }

    #[test]
    fn watch_paths() {
        assert_eq!(validate_watch("@releaseDomain"), Ok(()));
        assert_eq!(validate_watch("@"), Err(StoreError::Invalid));
        assert_eq!(validate_watch("@a b"), Err(StoreError::Invalid));
        assert_eq!(validate_watch("/a/"), Err(StoreError::Invalid));
    }
}
