//! Shared by the C-header ABI tests: compile a C program against libxen-dev's
//! headers, run it, and compare its `name value` lines with a Rust table.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Headers every check needs; CI installs them with `apt-get install -y libxen-dev`.
pub const REQUIRED_HEADERS: &[&str] = &[
    "/usr/include/xen/io/netif.h",
    "/usr/include/xen/io/ring.h",
    "/usr/include/xen/grant_table.h",
];

/// Lines every generated program starts with: the barriers ring.h expects the includer
/// to define (it maps `xen_mb()` onto `mb()` for non-hypervisor builds), the headers,
/// and printing helpers.
pub const C_PRELUDE: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#define mb()  __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()
#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/netif.h>

#define P(name, expr) printf("%s %lld\n", (name), (long long)(expr))
#define SZ(T) P("sizeof." #T, sizeof(T))
#define AL(T) P("alignof." #T, _Alignof(T))
#define OFF(T, f) P("offsetof." #T "." #f, offsetof(T, f))
static __attribute__((unused)) void bytes(const char *name, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s ", name);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}
"#;

/// Fails (never skips) when libxen-dev is absent: the ABI must be checked in CI.
pub fn require_headers() {
    let missing: Vec<&str> = REQUIRED_HEADERS
        .iter()
        .copied()
        .filter(|h| !Path::new(h).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "Xen public headers missing: {missing:?}. Install them with `apt-get install -y libxen-dev`; \
         the ABI checks must not be skipped"
    );
}

/// Compiles `source` with `cc`, runs it and parses its `name value` lines (names may
/// contain spaces, e.g. `sizeof.struct netif_tx_request`; values never do).
pub fn run_c(stem: &str, source: &str) -> BTreeMap<String, String> {
    require_headers();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi_c_headers");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let src = dir.join(format!("{stem}.c"));
    let exe = dir.join(stem);
    std::fs::write(&src, source).expect("write C source");
    let out = Command::new("cc")
        .args(["-std=gnu11", "-Wall", "-Werror", "-O0", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc (is a C compiler installed?)");
    assert!(
        out.status.success(),
        "cc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    assert!(run.status.success(), "C program failed: {:?}", run.status);
    let text = String::from_utf8(run.stdout).expect("C output is UTF-8");
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line from C: {line:?}"));
        let dup = map.insert(name.to_string(), value.to_string());
        assert!(dup.is_none(), "C printed {name} twice");
    }
    map
}

/// The Rust side of the comparison: `name -> value` in the C program's notation.
#[derive(Default)]
pub struct Expected {
    rows: Vec<(String, String)>,
}

impl Expected {
    pub fn add(&mut self, name: impl Into<String>, value: impl Display) {
        self.rows.push((name.into(), value.to_string()));
    }

    pub fn add_bytes(&mut self, name: impl Into<String>, bytes: &[u8]) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.rows.push((name.into(), hex));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Every Rust row must match the C value, and every C line must have a Rust row
    /// (nothing the C side measured goes unchecked). All mismatches are reported at once.
    pub fn compare(&self, c: &BTreeMap<String, String>) {
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, rust) in &self.rows {
            assert!(seen.insert(name.clone()), "Rust table lists {name} twice");
            match c.get(name) {
                None => problems.push(format!("{name}: Rust has {rust}, C printed nothing")),
                Some(cv) if cv != rust => {
                    problems.push(format!("{name}: C header says {cv}, Rust says {rust}"))
                }
                Some(_) => {}
            }
        }
        for (name, cv) in c {
            if !seen.contains(name) {
                problems.push(format!("{name}: C printed {cv}, Rust table has no row"));
            }
        }
        assert!(
            problems.is_empty(),
            "{} ABI mismatch(es) against libxen-dev:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
}

/// Byte offset of a (possibly nested) field, for types whose nested field types are
/// not named here (`core::mem::offset_of!` needs Rust 1.82 for nested paths).
#[macro_export]
macro_rules! field_offset {
    ($ty:ty, $($field:tt)+) => {{
        let v = ::core::mem::MaybeUninit::<$ty>::uninit();
        let base = v.as_ptr();
        // SAFETY: only the address of a field of an uninitialised local is computed;
        // nothing is read.
        let field = unsafe { ::core::ptr::addr_of!((*base).$($field)+) };
        (field as *const u8 as usize) - (base as *const u8 as usize)
    }};
}
