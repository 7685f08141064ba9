//! Extraction from verified fixes of ten kinds (insta snapshots, holes visible), the
//! extraction -> apply round trip, transfer to code with other names, and the refusals.

use agency_core::pattern::{Rewrite, holes};
use agency_learn::{
    Error, Extracted, Site, apply, apply_checked, compile, extract, generalise, parse_source,
};

/// One verified fix: rule, finding line, whole file before and after.
struct Case {
    rule: &'static str,
    line: u32,
    before: &'static str,
    after: &'static str,
}

const CASES: &[(&str, Case)] = &[
    (
        "e711",
        Case {
            rule: "E711",
            line: 2,
            before: "def check(user):\n    if user.email == None:\n        return False\n    return True\n",
            after: "def check(user):\n    if user.email is None:\n        return False\n    return True\n",
        },
    ),
    (
        "e712",
        Case {
            rule: "E712",
            line: 2,
            before: "def run(flag, job):\n    if flag == True:\n        job.start()\n        job.wait()\n",
            after: "def run(flag, job):\n    if flag:\n        job.start()\n        job.wait()\n",
        },
    ),
    (
        "f401",
        Case {
            rule: "F401",
            line: 1,
            before: "from typing import Any, List\n\n\ndef f(x: List[int]) -> int:\n    return len(x)\n",
            after: "from typing import List\n\n\ndef f(x: List[int]) -> int:\n    return len(x)\n",
        },
    ),
    (
        "f841",
        Case {
            rule: "F841",
            line: 2,
            before: "def save(db, row):\n    result = db.insert(row)\n    db.commit()\n",
            after: "def save(db, row):\n    db.insert(row)\n    db.commit()\n",
        },
    ),
    (
        "f541",
        Case {
            rule: "F541",
            line: 2,
            before: "def greet():\n    print(f\"hello world\")\n",
            after: "def greet():\n    print(\"hello world\")\n",
        },
    ),
    (
        "b506",
        Case {
            rule: "B506",
            line: 5,
            before: "import yaml\n\n\ndef load(fh):\n    cfg = yaml.load(fh)\n    return cfg\n",
            after: "import yaml\n\n\ndef load(fh):\n    cfg = yaml.safe_load(fh)\n    return cfg\n",
        },
    ),
    (
        "b608",
        Case {
            rule: "B608",
            line: 2,
            before: "def find(self, user_id):\n    self.conn.execute(\"SELECT * FROM users WHERE id = %s\" % user_id)\n",
            after: "def find(self, user_id):\n    self.conn.execute(\"SELECT * FROM users WHERE id = %s\", (user_id,))\n",
        },
    ),
    (
        "return-value",
        Case {
            rule: "return-value",
            line: 5,
            before: "def find(items: list[str], key: str) -> str:\n    for item in items:\n        if item == key:\n            return item\n    return None\n",
            after: "def find(items: list[str], key: str) -> str | None:\n    for item in items:\n        if item == key:\n            return item\n    return None\n",
        },
    ),
    (
        "none-guard",
        Case {
            rule: "none-attribute",
            line: 3,
            before: "def label(key):\n    obj = lookup(key)\n    return obj.name\n",
            after: "def label(key):\n    obj = lookup(key)\n    if obj is None:\n        return \"\"\n    return obj.name\n",
        },
    ),
    (
        "union-attr",
        Case {
            rule: "union-attr",
            line: 2,
            before: "def clean(title: str | None) -> str:\n    return title.strip()\n",
            after: "def clean(title: str | None) -> str:\n    return (title or \"\").strip()\n",
        },
    ),
    (
        "arg-type",
        Case {
            rule: "arg-type",
            line: 3,
            before: "def notify(user):\n    email = user.get(\"email\")\n    send_mail(email)\n",
            after: "def notify(user):\n    email = user.get(\"email\")\n    if email is not None:\n        send_mail(email)\n",
        },
    ),
    (
        "b324",
        Case {
            rule: "B324",
            line: 2,
            before: "def digest(data):\n    return hashlib.md5(data).hexdigest()\n",
            after: "def digest(data):\n    return hashlib.sha256(data).hexdigest()\n",
        },
    ),
];

fn render(extracted: &Extracted) -> String {
    let holes: Vec<String> = extracted
        .holes
        .iter()
        .map(|h| format!("?{}:{}", h.name, h.kind))
        .collect();
    format!(
        "before:\n{}\nafter:\n{}\nholes: {}\nexample before:\n{}\nexample after:\n{}\n",
        extracted.rewrite.before,
        extracted.rewrite.after,
        holes.join(", "),
        extracted.example.before,
        extracted.example.after
    )
}

fn extracted(case: &Case) -> Extracted {
    extract(case.rule, case.before, case.after, case.line)
        .unwrap_or_else(|e| panic!("{}: {e}", case.rule))
}

#[test]
fn extraction_snapshots() {
    for (name, case) in CASES {
        let extracted = extracted(case);
        insta::assert_snapshot!(*name, render(&extracted));
    }
}

/// Learned rewrites obey the store's rules: no bare hole as before root, no unbound after
/// hole, no `?x -> ?y`.
#[test]
fn extracted_rewrites_are_valid() {
    for (name, case) in CASES {
        let extracted = extracted(case);
        extracted
            .rewrite
            .validate()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let bound = holes(&extracted.rewrite.before);
        assert!(holes(&extracted.rewrite.after).is_subset(&bound), "{name}");
        for side in [&extracted.rewrite.before, &extracted.rewrite.after] {
            let t = side.trim();
            let bare = t
                .strip_prefix('?')
                .is_some_and(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'));
            assert!(!bare, "{name}: bare hole `{t}`");
        }
    }
}

/// Applying the extracted rewrite to its own example reproduces the after byte for byte, and
/// the result parses.
#[test]
fn extraction_round_trips() {
    for (name, case) in CASES {
        let extracted = extracted(case);
        let compiled = compile(&extracted.rewrite).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = parse_source(case.before).expect("parses");
        let fix = apply(&compiled, &parsed, Site::line(case.line))
            .expect("applies")
            .unwrap_or_else(|| panic!("{name}: no match at its own site"));
        let fixed = fix.apply_to(case.before).expect("edits fit");
        assert_eq!(fixed, case.after, "{name}");
        parse_source(&fixed).expect("fixed source parses");
    }
}

/// Learned on one snippet, applied to another with other names.
#[test]
fn learned_rewrites_transfer_to_other_names() {
    let transfers = [
        (
            "b506",
            "import yaml\n\ncfg = yaml.load(open(path))  # keep me\n",
            3,
            "import yaml\n\ncfg = yaml.safe_load(open(path))  # keep me\n",
        ),
        (
            "b608",
            "def get(db, name):\n    db.cursor.execute(\"SELECT 1 WHERE n = %s\" % name)\n",
            2,
            "def get(db, name):\n    db.cursor.execute(\"SELECT 1 WHERE n = %s\", (name,))\n",
        ),
        (
            "e711",
            "while (node.next  # the tail\n       ) == None:\n    pass\n",
            1,
            "while (node.next  # the tail\n       ) is None:\n    pass\n",
        ),
        (
            "union-attr",
            "class A:\n    def f(self):\n        return self.label.strip()\n",
            3,
            "class A:\n    def f(self):\n        return (self.label or \"\").strip()\n",
        ),
        (
            "arg-type",
            "for row in rows:\n    value = row.get(\"v\")\n    handle(value)\n",
            3,
            "for row in rows:\n    value = row.get(\"v\")\n    if value is not None:\n        handle(value)\n",
        ),
        (
            "return-value",
            "def g(a, b=1, *rest) -> int:\n    if a:\n        return None\n    return b\n",
            3,
            "def g(a, b=1, *rest) -> int | None:\n    if a:\n        return None\n    return b\n",
        ),
    ];
    for (name, source, line, expected) in transfers {
        let (_, case) = CASES.iter().find(|(n, _)| *n == name).expect("case exists");
        let compiled = compile(&extracted(case).rewrite).expect("compiles");
        let parsed = parse_source(source).expect("parses");
        let fix = apply(&compiled, &parsed, Site::line(line))
            .expect("applies")
            .unwrap_or_else(|| panic!("{name}: no match"));
        let fixed = fix.apply_to(source).expect("edits fit");
        assert_eq!(fixed, expected, "{name}");
        parse_source(&fixed).expect("fixed source parses");
        // `?a.strip()` also matches `(?a or "").strip()`, and `-> ?b` matches `-> int | None`:
        // those rewrites are not idempotent, and the check says so.
        let checked = apply_checked(&compiled, source, &fix);
        let idempotent = !matches!(name, "union-attr" | "return-value");
        assert_eq!(checked.is_ok(), idempotent, "{name}: {checked:?}");
    }
}

#[test]
fn suppressions_are_refused() {
    let err =
        extract("F401", "import os\n", "import os  # noqa: F401\n", 1).expect_err("suppression");
    assert!(matches!(err, Error::Suppression), "{err}");
    let err = extract("arg-type", "f(x)\n", "f(x)  # type: ignore[arg-type]\n", 1)
        .expect_err("suppression");
    assert!(matches!(err, Error::Suppression), "{err}");
}

#[test]
fn deleting_the_flagged_code_is_refused_unless_deletion_is_the_fix() {
    let before = "def f(x):\n    check(x)\n    return x\n";
    let after = "def f(x):\n    return x\n";
    let err = extract("arg-type", before, after, 2).expect_err("deletion");
    assert!(matches!(err, Error::Deletion { .. }), "{err}");
    let unused = extract(
        "F401",
        "import os\nimport sys\n\nprint(sys.argv)\n",
        "import sys\n\nprint(sys.argv)\n",
        1,
    )
    .expect("deletion is the fix for F401");
    assert_eq!(
        unused.rewrite,
        Rewrite {
            before: "import ?a".into(),
            after: String::new()
        }
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(matches!(
        extract("E711", "x == None\n", "x == None\n", 1),
        Err(Error::NoChange)
    ));
    assert!(matches!(
        extract("E711", "if x == None\n", "if x is None:\n", 1),
        Err(Error::Source { .. })
    ));
    assert!(matches!(
        extract("E711", "x == None\n", "x is None\n", 9),
        Err(Error::Site { .. })
    ));
    assert!(matches!(
        parse_source("def f(:\n"),
        Err(Error::Source { .. })
    ));
    let bad = Rewrite {
        before: "?x ==".into(),
        after: "?x is None".into(),
    };
    assert!(matches!(compile(&bad), Err(Error::Template { .. })));
    let compiled = compile(&Rewrite {
        before: "?x == None".into(),
        after: "?x is None".into(),
    })
    .expect("compiles");
    let parsed = parse_source("x == None\n").expect("parses");
    assert!(matches!(
        apply(&compiled, &parsed, Site::line(0)),
        Err(Error::Site { .. })
    ));
    assert!(matches!(
        apply(&compiled, &parsed, Site::line(5)),
        Err(Error::Site { .. })
    ));
}

/// A repeated hole binds one token stream: `a[k] if j in a else None` is not the `.get` idiom.
#[test]
fn repeated_holes_must_bind_equal_code() {
    let compiled = compile(&Rewrite {
        before: "?d[?k] if ?k in ?d else None".into(),
        after: "?d.get(?k)".into(),
    })
    .expect("compiles");
    let check = |source: &str| {
        let parsed = parse_source(source).expect("parses");
        apply(&compiled, &parsed, Site::line(1)).expect("applies")
    };
    assert_eq!(check("v = a[k] if j in a else None\n"), None);
    assert_eq!(check("v = a[k] if k in b else None\n"), None);
    let fix = check("v = a[ k ] if k in a else None\n").expect("matches, whitespace aside");
    assert_eq!(
        fix.apply_to("v = a[ k ] if k in a else None\n")
            .expect("fits"),
        "v = a.get(k)\n"
    );
}

/// Code inside strings and comments never matches.
#[test]
fn strings_and_comments_never_match() {
    let compiled = compile(&Rewrite {
        before: "?x == None".into(),
        after: "?x is None".into(),
    })
    .expect("compiles");
    let source = "doc = \"\"\"\n>>> x == None\n\"\"\"\n# y == None\n";
    let parsed = parse_source(source).expect("parses");
    for line in 1..=4 {
        assert_eq!(
            apply(&compiled, &parsed, Site::line(line)).expect("applies"),
            None,
            "line {line}"
        );
    }
}

/// Two examples of one rule generalise into one rewrite that still round-trips both.
#[test]
fn two_extractions_generalise() {
    let a = extract(
        "B324",
        "h = hashlib.md5(data)\n",
        "h = hashlib.sha256(data)\n",
        1,
    )
    .expect("extracts");
    let b = extract(
        "B324",
        "digest = hashlib.md5(payload.encode()).hexdigest()\n",
        "digest = hashlib.sha256(payload.encode()).hexdigest()\n",
        1,
    )
    .expect("extracts");
    assert_eq!(
        a.rewrite, b.rewrite,
        "same shape, same fingerprint: the caller merges"
    );
    assert_eq!(a.rewrite.fingerprint("B324"), b.rewrite.fingerprint("B324"));
    let hello = extract("F541", "print(f\"hello\")\n", "print(\"hello\")\n", 1).expect("extracts");
    let bye = extract("F541", "log(f\"bye now\")\n", "log(\"bye now\")\n", 1).expect("extracts");
    let general = generalise(&hello.rewrite, &bye.rewrite).expect("generalises");
    let compiled = compile(&general).expect("compiles");
    for (before, after) in [
        ("print(f\"hello\")\n", "print(\"hello\")\n"),
        ("x = f\"other\"\n", "x = \"other\"\n"),
    ] {
        let parsed = parse_source(before).expect("parses");
        let fix = apply(&compiled, &parsed, Site::line(1))
            .expect("applies")
            .expect("matches");
        assert_eq!(
            apply_checked(&compiled, before, &fix).expect("checks"),
            after
        );
    }
}

/// Files with CRLF line endings: the learned rewrite has none, its application keeps them.
#[test]
fn crlf_files_round_trip() {
    let before = "def f(x):\r\n    y = g(x)\r\n    return y.name\r\n";
    let after = "def f(x):\r\n    y = g(x)\r\n    if y is None:\r\n        return \"\"\r\n    return y.name\r\n";
    let extracted = extract("none-attribute", before, after, 3).expect("extracts");
    assert!(
        !extracted.rewrite.after.contains('\r'),
        "{:?}",
        extracted.rewrite
    );
    let compiled = compile(&extracted.rewrite).expect("compiles");
    let parsed = parse_source(before).expect("parses");
    let fix = apply(&compiled, &parsed, Site::line(3))
        .expect("valid")
        .expect("matches");
    assert_eq!(fix.apply_to(before).expect("fits"), after);
}
