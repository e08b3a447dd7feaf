use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::error::ErrorKind;
use crate::model::{Thing, ThingId, Timestamp};

pub(super) fn thing(id: &str, body: Value) -> Thing {
    Thing::new(
        ThingId::new(id).unwrap(),
        body,
        Timestamp::from_micros(1_700_000_000_000_000),
    )
    .unwrap()
}

fn sample() -> Thing {
    let mut t = thing(
        "org.acme:car-1",
        json!({
            "policyId": "org.acme:policy",
            "attributes": {
                "manufacturer": "ACME",
                "model": "Roadster 3000",
                "year": 2024,
                "weight": 1500.5,
                "electric": true,
                "nothing": null,
                "tags": ["fast", "red", 7],
                "location": {"city": "Valencia", "zip": "46001"},
                "wheels": [{"pos": "fl", "psi": 32}, {"pos": "fr", "psi": 35}],
                "matrix": [[1, 2], [3]]
            },
            "features": {
                "engine": {"properties": {"rpm": 3000, "temp": 90.5, "status": "ok"}},
                "lane": {"properties": {"offset": -0.25, "status": "warn"}},
                "camera": {"properties": {"status": "OK"}, "desiredProperties": {"fps": 30}}
            }
        }),
    );
    t.set_metadata(Some(json!({"attributes": {"year": {"source": "factory"}}})));
    t
}

fn m(filter: &str, doc: &(impl Document + ?Sized)) -> bool {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(doc)
}

#[test]
fn relational_operators_on_a_thing() {
    let t = sample();
    let cases: &[(&str, bool)] = &[
        (r#"eq(thingId,"org.acme:car-1")"#, true),
        (r#"eq(policyId,"org.acme:policy")"#, true),
        (r#"eq(attributes/manufacturer,"ACME")"#, true),
        (r#"eq(attributes/manufacturer,"acme")"#, false),
        (r#"eq(/attributes/manufacturer,"ACME")"#, true),
        ("eq(attributes/year,2024)", true),
        ("eq(attributes/year,2024.0)", true),
        ("eq(attributes/year,2.024e3)", true),
        ("eq(attributes/weight,1500.5)", true),
        ("eq(attributes/electric,true)", true),
        ("eq(attributes/electric,false)", false),
        ("eq(attributes/nothing,null)", true),
        ("eq(attributes/missing,null)", false),
        ("gt(attributes/year,2023)", true),
        ("gt(attributes/year,2024)", false),
        ("ge(attributes/year,2024)", true),
        ("lt(attributes/year,2024.5)", true),
        ("le(attributes/year,2023.999)", false),
        ("lt(features/lane/properties/offset,0)", true),
        ("gt(features/lane/properties/offset,-1)", true),
        (r#"gt(attributes/manufacturer,"AC")"#, true),
        (r#"lt(attributes/manufacturer,"B")"#, true),
        (r#"in(attributes/year,2020,2024)"#, true),
        (r#"in(attributes/year,"2024",1)"#, false),
        (r#"in(attributes/manufacturer,"X","ACME")"#, true),
        (r#"like(attributes/model,"Road*")"#, true),
        (r#"like(attributes/model,"*3000")"#, true),
        (r#"like(attributes/model,"*ster*")"#, true),
        (r#"like(attributes/model,"Roadster ?000")"#, true),
        (r#"like(attributes/model,"roadster*")"#, false),
        (r#"ilike(attributes/model,"roadster*")"#, true),
        (r#"ilike(attributes/model,"ROADSTER ??00")"#, true),
        (r#"like(attributes/model,"Roadster")"#, false),
        ("exists(attributes/location/city)", true),
        ("exists(attributes/location/country)", false),
        ("exists(features/camera/desiredProperties)", true),
        ("exists(attributes/nothing)", true),
        (r#"ne(attributes/manufacturer,"Other")"#, true),
        (r#"ne(attributes/manufacturer,"ACME")"#, false),
        (r#"ne(attributes/missing,"ACME")"#, false),
        (r#"not(eq(attributes/missing,"ACME"))"#, true),
        ("ne(attributes/nothing,null)", false),
        ("ne(attributes/nothing,1)", true),
    ];
    for (f, want) in cases {
        assert_eq!(m(f, &t), *want, "{f}");
    }
}

#[test]
fn logical_operators() {
    let t = sample();
    let cases: &[(&str, bool)] = &[
        (
            r#"and(eq(attributes/manufacturer,"ACME"),gt(features/engine/properties/rpm,2000))"#,
            true,
        ),
        (
            r#"and(eq(attributes/manufacturer,"ACME"),gt(features/engine/properties/rpm,3000))"#,
            false,
        ),
        (r#"and(eq(attributes/year,2024))"#, true),
        (r#"or(eq(attributes/year,1),eq(attributes/year,2))"#, false),
        (
            r#"or(eq(attributes/year,1),eq(attributes/year,2024))"#,
            true,
        ),
        (r#"or(eq(attributes/year,2024))"#, true),
        (r#"not(exists(attributes/location))"#, false),
        (r#"not(not(exists(attributes/location)))"#, true),
        (
            r#"and(or(eq(attributes/year,1),not(eq(attributes/year,1))),exists(thingId))"#,
            true,
        ),
    ];
    for (f, want) in cases {
        assert_eq!(m(f, &t), *want, "{f}");
    }
}

#[test]
fn underscore_fields_of_a_thing() {
    let t = sample();
    assert!(m("eq(_revision,1)", &t));
    assert!(m("ge(_revision,1)", &t));
    assert!(m(r#"eq(_modified,"2023-11-14T22:13:20.000000Z")"#, &t));
    assert!(m(r#"gt(_modified,"2023-11-14T22:13:19.999999Z")"#, &t));
    assert!(m(r#"lt(_created,"2024-01-01T00:00:00Z")"#, &t));
    assert!(m(r#"eq(_metadata/attributes/year/source,"factory")"#, &t));
    assert!(!m("exists(_metadata/features)", &t));
    // The same filters work on plain JSON documents.
    let doc = t.full_json();
    assert!(m("eq(_revision,1)", &doc));
    assert!(m(r#"eq(_metadata/attributes/year/source,"factory")"#, &doc));
}

#[test]
fn wildcards() {
    let t = sample();
    let cases: &[(&str, bool)] = &[
        (r#"eq(features/*/properties/status,"warn")"#, true),
        (r#"eq(features/*/properties/status,"error")"#, false),
        (r#"ilike(features/*/properties/status,"ok")"#, true),
        ("gt(features/*/properties/rpm,2999)", true),
        ("exists(features/*/desiredProperties/fps)", true),
        ("exists(features/*/desiredProperties/brightness)", false),
        (r#"eq(attributes/*,"ACME")"#, true),
        (r#"eq(attributes/*/city,"Valencia")"#, true),
        (r#"eq(*/manufacturer,"ACME")"#, true),
        (r#"eq(*/*/properties/rpm,3000)"#, true),
        (r#"eq(features/*/*/*,30)"#, true),
        // ne: some value exists, and none equals.
        (r#"ne(features/*/properties/status,"error")"#, true),
        (r#"ne(features/*/properties/status,"ok")"#, false),
        (r#"ne(features/*/properties/nope,"ok")"#, false),
    ];
    for (f, want) in cases {
        assert_eq!(m(f, &t), *want, "{f}");
    }
}

#[test]
fn arrays() {
    let t = sample();
    let cases: &[(&str, bool)] = &[
        (r#"eq(attributes/tags,"red")"#, true),
        (r#"eq(attributes/tags,7)"#, true),
        (r#"eq(attributes/tags,"blue")"#, false),
        (r#"in(attributes/tags,"blue","fast")"#, true),
        (r#"like(attributes/tags,"f*")"#, true),
        (r#"gt(attributes/tags,6)"#, true),
        (r#"gt(attributes/tags,7)"#, false),
        (r#"ne(attributes/tags,"blue")"#, true),
        (r#"ne(attributes/tags,"red")"#, false),
        (r#"exists(attributes/tags)"#, true),
        // Crossing arrays of objects.
        (r#"eq(attributes/wheels/pos,"fr")"#, true),
        (r#"gt(attributes/wheels/psi,34)"#, true),
        (r#"gt(attributes/wheels/psi,35)"#, false),
        (r#"eq(attributes/wheels/1/psi,35)"#, true),
        (r#"eq(attributes/wheels/0/psi,35)"#, false),
        (r#"eq(attributes/wheels/*/pos,"fl")"#, true),
        (r#"exists(attributes/wheels/pressure)"#, false),
        (r#"eq(attributes/tags/1,"red")"#, true),
        (r#"eq(attributes/tags/*,7)"#, true),
        // One level of elements only: [[1,2],[3]] has no element equal to 1.
        (r#"eq(attributes/matrix,1)"#, false),
        (r#"eq(attributes/matrix/*,1)"#, true),
    ];
    for (f, want) in cases {
        assert_eq!(m(f, &t), *want, "{f}");
    }
}

#[test]
fn type_mismatches_are_false() {
    let t = sample();
    for f in [
        r#"eq(attributes/year,"2024")"#,
        r#"gt(attributes/year,"2000")"#,
        r#"lt(attributes/manufacturer,5)"#,
        "gt(attributes/electric,false)",
        "gt(attributes/nothing,null)",
        "ge(attributes/nothing,null)",
        "eq(attributes/electric,1)",
        "eq(attributes/location,null)",
        r#"like(attributes/year,"2*")"#,
        r#"gt(attributes/location,"a")"#,
        "eq(attributes/nothing,false)",
    ] {
        assert!(!m(f, &t), "{f}");
    }
    // ne across types: the property exists and is not equal.
    assert!(m(r#"ne(attributes/year,"2024")"#, &t));
}

#[test]
fn numbers_compare_numerically() {
    let doc = json!({
        "i": 1, "f": 1.0, "big": u64::MAX, "neg": i64::MIN, "half": 0.5, "p": 9007199254740993u64
    });
    let cases: &[(&str, bool)] = &[
        ("eq(i,1.0)", true),
        ("eq(f,1)", true),
        ("eq(i,+1)", true),
        ("eq(i,1e0)", true),
        ("eq(i,10E-1)", true),
        ("gt(big,9223372036854775807)", true),
        ("eq(big,18446744073709551615)", true),
        ("gt(big,1.8e19)", true),
        ("lt(neg,-9223372036854775807)", true),
        ("eq(neg,-9223372036854775808)", true),
        ("lt(half,1)", true),
        ("gt(half,0)", true),
        ("gt(half,-0.0)", true),
        ("eq(half,5e-1)", true),
        // 2^53 + 1 is not the float 2^53.
        ("gt(p,9007199254740992.0)", true),
        ("eq(p,9007199254740993)", true),
    ];
    for (f, want) in cases {
        assert_eq!(m(f, &doc), *want, "{f}");
    }
}

#[test]
fn like_patterns() {
    use super::eval::like;
    let cases: &[(&str, &str, bool, bool)] = &[
        ("*", "", false, true),
        ("*", "anything", false, true),
        ("", "", false, true),
        ("", "a", false, false),
        ("?", "", false, false),
        ("?", "é", false, true),
        ("a*b*c", "aXXbYYc", false, true),
        ("a*b*c", "aXXbYY", false, false),
        ("**a**", "bab", false, true),
        ("*a", "aaa", false, true),
        ("a?c", "abc", false, true),
        ("a?c", "abbc", false, false),
        ("ÄBC*", "äbcd", true, true),
        ("ÄBC*", "äbcd", false, false),
        ("*.jpg", "frame.JPG", true, true),
        ("h*o w?rld", "hello world", false, true),
        (
            "a*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            false,
            false,
        ),
    ];
    for (p, t, ci, want) in cases {
        assert_eq!(like(p, t, *ci), *want, "like({p:?}, {t:?}, ci={ci})");
    }
}

/// A slow, obviously correct wildcard matcher to check the fast one against.
fn like_reference(p: &[char], t: &[char]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some(('*', rest)) => (0..=t.len()).any(|i| like_reference(rest, &t[i..])),
        Some(('?', rest)) => !t.is_empty() && like_reference(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && like_reference(rest, &t[1..]),
    }
}

#[test]
fn top_level_wildcard_needs_keys() {
    struct NoKeys;
    impl Document for NoKeys {
        fn field(&self, key: &str) -> Option<std::borrow::Cow<'_, Value>> {
            (key == "a").then(|| std::borrow::Cow::Owned(json!(1)))
        }
    }
    assert!(m("eq(a,1)", &NoKeys));
    assert!(!m("eq(*,1)", &NoKeys));
    assert!(m("eq(*,1)", &json!({"x": 1})));
}

#[test]
fn invalid_filters_are_rql_invalid() {
    let cases = [
        "",
        "   ",
        "eq(a)",
        "eq(a,)",
        "eq(,1)",
        "eq(a,1,2)",
        "foo(a,1)",
        "EQ(a,1)",
        "and()",
        "or()",
        "not()",
        "not(eq(a,1),eq(b,2))",
        "and(eq(a,1),)",
        "and(eq(a,1)",
        "and(eq(a,1)) x",
        r#"eq(a,"x""#,
        r#"eq(a,"x)"#,
        r#"eq(a,'x)"#,
        "eq(a//b,1)",
        "eq(a/,1)",
        "eq(/,1)",
        "eq(//a,1)",
        "eq(a,1))",
        "eq(a,1)garbage",
        "eq(a,1),eq(b,2)",
        "eq(a,x)",
        "eq(a,True)",
        "eq(a,nullx)",
        "eq(a,1.)",
        "eq(a,.5)",
        "eq(a,1e)",
        "eq(a,-)",
        "eq(a,1x)",
        "eq(a,1e999)",
        "eq(a,--1)",
        r#"eq(a,"\q")"#,
        r#"eq(a,"\u12")"#,
        r#"eq(a,"\ud800")"#,
        r#"eq(a,"\ud800\u0041")"#,
        r#"eq(a\b,1)"#,
        "eq(a\u{1}b,1)",
        "like(a,1)",
        "ilike(a,null)",
        "in(a)",
        "in(a,)",
        "in(a,1,)",
        "in(a,1 2)",
        "exists()",
        "exists(a,1)",
        "exists(a",
        "eq a,1)",
        "eq(a(b),1)",
        "(eq(a,1))",
        "eq(a,[1])",
        "eq(a,{})",
        "eq(a b,1",
    ];
    for s in cases {
        match Filter::parse(s) {
            Ok(f) => panic!("{s:?} parsed as {f}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::RqlInvalid, "{s:?}");
                assert_eq!(e.status(), 400);
                assert_eq!(e.code(), "rql.expression.invalid");
                assert!(e.message().contains("position"), "{s:?}: {}", e.message());
            }
        }
    }
}

#[test]
fn errors_name_the_position() {
    let pos = |s: &str| {
        let msg = Filter::parse(s).unwrap_err().message().to_owned();
        let tail = msg
            .split("at position ")
            .nth(1)
            .unwrap_or_else(|| panic!("{msg}"));
        tail.split(':').next().unwrap().parse::<usize>().unwrap()
    };
    assert_eq!(pos("eq(a)"), 4);
    assert_eq!(pos("eq(a,)"), 5);
    assert_eq!(pos("foo(a,1)"), 0);
    assert_eq!(pos("and(eq(a,1),bar(b,2))"), 12);
    assert_eq!(pos(r#"eq(a,"x"#), 5);
    assert_eq!(pos("eq(a//b,1)"), 5);
    assert_eq!(pos("eq(a,1) x"), 8);
    assert_eq!(pos("eq(ä,1)x"), 7, "positions count characters, not bytes");
    let e = Filter::parse("foo(a,1)").unwrap_err();
    assert!(
        e.message().contains("unknown operator 'foo'"),
        "{}",
        e.message()
    );
}

#[test]
fn accepted_syntax_variants() {
    let canonical = |s: &str| {
        Filter::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    };
    assert_eq!(
        canonical(" and( eq( attributes/a , 'x' ) ,\n gt(b,3) ) "),
        r#"and(eq(attributes/a,"x"),gt(b,3))"#
    );
    assert_eq!(
        canonical(r#"eq(/thingId,'it\'s "q"')"#),
        r#"eq(thingId,"it's \"q\"")"#
    );
    assert_eq!(
        canonical(r#"eq(a,"tab\there\u00e9\ud83d\ude00\/")"#),
        "eq(a,\"tab\\there\u{e9}\u{1f600}/\")"
    );
    assert_eq!(canonical("eq(a,-0)"), "eq(a,0)");
    assert_eq!(canonical("eq(a,1.50)"), "eq(a,1.5)");
    assert_eq!(canonical("eq(a,1e3)"), "eq(a,1000.0)");
    assert_eq!(canonical("eq(a,+7)"), "eq(a,7)");
    assert_eq!(
        canonical("in(a, 1 , 'b',null,true)"),
        r#"in(a,1,"b",null,true)"#
    );
    assert_eq!(
        canonical("eq(attributes/my key,1)"),
        "eq(attributes/my key,1)"
    );
    assert_eq!(
        canonical("exists(features/*/properties)"),
        "exists(features/*/properties)"
    );
    assert_eq!(canonical("eq(a,\"\u{1}\")"), "eq(a,\"\\u0001\")");
    // A key with spaces inside is addressed as written.
    assert!(m(
        "eq(attributes/my key,1)",
        &json!({"attributes": {"my key": 1}})
    ));
}

#[test]
fn display_round_trips() {
    for s in [
        r#"and(eq(attributes/a,"x"),gt(features/f/properties/p,3))"#,
        r#"or(not(exists(_metadata/x)),in(thingId,"a:b","c:d"),ilike(attributes/n,"*A?"))"#,
        r#"ne(a,null)"#,
        r#"le(a,-12.75)"#,
        r#"ge(a,18446744073709551615)"#,
        r#"lt(a,1e-7)"#,
        r#"eq(a,"\"\\\n\u0000é")"#,
    ] {
        let f = Filter::parse(s).unwrap();
        let again = Filter::parse(&f.to_string()).unwrap();
        assert_eq!(again, f, "{s} -> {f}");
    }
}

#[test]
fn nesting_depth_is_capped() {
    let nested = |depth: usize| {
        let mut s = String::new();
        for _ in 1..depth {
            s.push_str("not(");
        }
        s.push_str("eq(a,1)");
        for _ in 1..depth {
            s.push(')');
        }
        s
    };
    let ok = Filter::parse(&nested(MAX_DEPTH)).unwrap();
    assert!(
        ok.matches(&json!({"a": 2})),
        "63 nots of eq(a,1) is not(eq)"
    );
    assert_eq!(Filter::parse(&ok.to_string()).unwrap(), ok);
    let e = Filter::parse(&nested(MAX_DEPTH + 1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RqlInvalid);
    assert!(e.message().contains("nested deeper"), "{}", e.message());
    // Far beyond the cap: an error, not a stack overflow.
    let deep = "and(".repeat(20_000);
    assert_eq!(
        Filter::parse(&deep).unwrap_err().kind(),
        ErrorKind::RqlInvalid
    );
    let deep = "not(".repeat(16_000) + "exists(a)" + &")".repeat(16_000);
    assert_eq!(
        Filter::parse(&deep).unwrap_err().kind(),
        ErrorKind::RqlInvalid
    );
}

#[test]
fn input_length_is_capped() {
    let long = format!("in(a,{})", vec!["1"; MAX_INPUT_LEN / 2].join(","));
    let e = Filter::parse(&long).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RqlInvalid);
    assert!(e.message().contains("too long"), "{}", e.message());
    let fits = format!("in(a,{})", vec!["1"; 1000].join(","));
    assert!(Filter::parse(&fits).is_ok());
    let many_segments = format!("exists({})", vec!["a"; MAX_PATH_SEGMENTS + 1].join("/"));
    assert_eq!(
        Filter::parse(&many_segments).unwrap_err().kind(),
        ErrorKind::RqlInvalid
    );
}

#[test]
fn filters_built_in_code_are_checked() {
    let path = Path::parse("attributes/a").unwrap();
    assert!(Filter::new(Node::And(vec![])).is_err());
    assert!(
        Filter::new(Node::In {
            path: path.clone(),
            values: vec![]
        })
        .is_err()
    );
    assert!(
        Filter::new(Node::Compare {
            op: CmpOp::Like,
            path: path.clone(),
            value: Literal::Bool(true)
        })
        .is_err()
    );
    let mut node = Node::Exists(path.clone());
    for _ in 0..MAX_DEPTH {
        node = Node::Not(Box::new(node));
    }
    assert!(Filter::new(node).is_err());
    let f = Filter::new(Node::Compare {
        op: CmpOp::Eq,
        path,
        value: Literal::String("x".into()),
    })
    .unwrap();
    assert_eq!(f.to_string(), r#"eq(attributes/a,"x")"#);
    assert!(Path::parse("a//b").is_err());
    assert!(Path::parse(" a").is_err());
    assert_eq!(
        Path::parse("/features/*/properties").unwrap().to_string(),
        "features/*/properties"
    );
}

// ---- options ----

#[test]
fn options_parse() {
    let o = SearchOptions::parse("sort(+attributes/a,-thingId),size(10),cursor(XYZ-_9)").unwrap();
    assert_eq!(o.size, 10);
    assert_eq!(o.cursor.as_deref(), Some("XYZ-_9"));
    assert_eq!(o.sort.len(), 2);
    assert_eq!(o.sort[0].path.to_string(), "attributes/a");
    assert!(o.sort[0].ascending);
    assert!(!o.sort[1].ascending);
    assert_eq!(
        o.to_string(),
        "sort(+attributes/a,-thingId),size(10),cursor(XYZ-_9)"
    );
    assert_eq!(SearchOptions::parse(&o.to_string()).unwrap(), o);

    let o = SearchOptions::parse(" size( 200 ) , sort( -/_modified ) ").unwrap();
    assert_eq!(o.size, MAX_SIZE);
    assert_eq!(o.sort[0].to_string(), "-_modified");
    let d = SearchOptions::parse("").unwrap();
    assert_eq!(d, SearchOptions::default());
    assert_eq!(d.size, DEFAULT_SIZE);
    assert_eq!(SearchOptions::parse("cursor(abc)").unwrap().size, 25);
}

#[test]
fn invalid_options() {
    for s in [
        "size(0)",
        "size(201)",
        "size(99999999999999999999999)",
        "size(-1)",
        "size()",
        "size(1.5)",
        "size(10",
        "size(1),size(2)",
        "sort()",
        "sort(thingId)",
        "sort( thingId)",
        "sort(+)",
        "sort(+a,)",
        "sort(+a//b)",
        "sort(+features/*/properties/x)",
        "sort(+a,-a)",
        "sort(+a),sort(-b)",
        "cursor()",
        "cursor(a b)",
        "cursor(a!)",
        "cursor(x),cursor(y)",
        "limit(0,10)",
        "foo(1)",
        "size(1)x",
        "size(1),",
        ",size(1)",
        "size(1);sort(+a)",
    ] {
        let e = SearchOptions::parse(s)
            .map(|o| panic!("{s:?} parsed as {o:?}"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OptionInvalid, "{s:?}");
        assert_eq!(e.code(), "things-search:option.invalid");
    }
}

// ---- search ----

fn fleet(n: usize) -> Vec<Thing> {
    (0..n)
        .map(|i| {
            let mut attributes = serde_json::Map::new();
            // Many duplicates, and some things without the attribute.
            if i % 7 != 0 {
                attributes.insert("bucket".into(), json!(i % 13));
            }
            if i % 11 == 0 {
                attributes.insert("bucket".into(), json!(format!("s{}", i % 3)));
            }
            attributes.insert("n".into(), json!(i));
            thing(
                &format!("ns:t{:04}", (i * 7919) % n),
                json!({"attributes": attributes}),
            )
        })
        .collect()
}

fn ids(items: &[&Thing]) -> Vec<String> {
    items.iter().map(|t| t.id().to_string()).collect()
}

fn opts(s: &str) -> SearchOptions {
    SearchOptions::parse(s).unwrap()
}

#[test]
fn sort_ascending_and_descending_with_missing_values() {
    let things = vec![
        thing("ns:a", json!({"attributes": {"v": 2}})),
        thing("ns:b", json!({})),
        thing("ns:c", json!({"attributes": {"v": "x"}})),
        thing("ns:d", json!({"attributes": {"v": null}})),
        thing("ns:e", json!({"attributes": {"v": 1.5}})),
        thing("ns:f", json!({"attributes": {"v": true}})),
        thing("ns:g", json!({"attributes": {"v": [1]}})),
        thing("ns:h", json!({"attributes": {"v": {"k": 1}}})),
        thing("ns:i", json!({"attributes": {"v": 2.0}})),
        thing("ns:j", json!({})),
    ];
    let page = search(&things, None, &opts("sort(+attributes/v)")).unwrap();
    assert_eq!(
        ids(&page.items),
        [
            "ns:b", "ns:j", "ns:d", "ns:f", "ns:e", "ns:a", "ns:i", "ns:c", "ns:g", "ns:h"
        ]
    );
    assert_eq!(page.cursor, None);
    let page = search(&things, None, &opts("sort(-attributes/v)")).unwrap();
    // Descending reverses the keys; thingId stays ascending among equal keys.
    assert_eq!(
        ids(&page.items),
        [
            "ns:h", "ns:g", "ns:c", "ns:a", "ns:i", "ns:e", "ns:f", "ns:d", "ns:b", "ns:j"
        ]
    );
    let page = search(&things, None, &opts("sort(-thingId),size(3)")).unwrap();
    assert_eq!(ids(&page.items), ["ns:j", "ns:i", "ns:h"]);
    let page = search(&things, None, &SearchOptions::default()).unwrap();
    assert_eq!(ids(&page.items)[..3], ["ns:a", "ns:b", "ns:c"]);
}

#[test]
fn search_filters_and_counts() {
    let things = fleet(100);
    let f = Filter::parse("lt(attributes/n,30)").unwrap();
    assert_eq!(count(&things, Some(&f)), 30);
    assert_eq!(count(&things, None), 100);
    let page = search(&things, Some(&f), &opts("sort(-attributes/n),size(5)")).unwrap();
    let ns: Vec<i64> = page
        .items
        .iter()
        .map(|t| t.body()["attributes"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [29, 28, 27, 26, 25]);
    assert!(page.cursor.is_some());
    let none = Filter::parse("eq(attributes/n,-1)").unwrap();
    let page = search(&things, Some(&none), &SearchOptions::default()).unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.cursor, None);
}

/// The full expected order, computed the slow way.
fn expected_order<'a>(
    things: &'a [Thing],
    filter: Option<&Filter>,
    sort: &[SortKey],
) -> Vec<&'a Thing> {
    let mut all: Vec<&Thing> = things
        .iter()
        .filter(|t| filter.is_none_or(|f| f.matches(*t)))
        .collect();
    all.sort_by(|a, b| {
        for k in sort {
            let x = eval::single_value(*a, &k.path);
            let y = eval::single_value(*b, &k.path);
            let o = eval::total_cmp(x.as_deref(), y.as_deref());
            let o = if k.ascending { o } else { o.reverse() };
            if o.is_ne() {
                return o;
            }
        }
        a.id().as_str().cmp(b.id().as_str())
    });
    all
}

fn page_through(
    things: &[Thing],
    filter: Option<&Filter>,
    first: &str,
    size: usize,
) -> Vec<String> {
    let mut options = opts(first);
    let mut seen = Vec::new();
    for _ in 0..=things.len() {
        let page = search(things, filter, &options).unwrap();
        assert!(page.items.len() <= size);
        seen.extend(ids(&page.items));
        match page.cursor {
            Some(c) => {
                assert!(
                    page.items.len() == size,
                    "a cursor comes only with a full page"
                );
                // Later pages: size and cursor only; the cursor carries the sort.
                options = opts(&format!("size({size}),cursor({c})"));
            }
            None => return seen,
        }
    }
    panic!("paging did not end");
}

#[test]
fn paging_with_cursors_visits_every_item_once_in_order() {
    let things = fleet(1000);
    let f = Filter::parse("not(eq(attributes/n,500))").unwrap();
    for (sort, size, filter) in [
        ("sort(+attributes/bucket),size(37)", 37, None),
        (
            "sort(-attributes/bucket,+attributes/n),size(200)",
            200,
            None,
        ),
        ("size(1)", 1, Some(&f)),
        ("sort(-attributes/bucket),size(25)", 25, Some(&f)),
        ("sort(+_revision,-thingId),size(64)", 64, None),
    ] {
        let o = opts(sort);
        let want = ids(&expected_order(&things, filter, &o.sort));
        let got = page_through(&things, filter, sort, size);
        assert_eq!(got.len(), want.len(), "{sort}");
        assert_eq!(got, want, "{sort}");
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{sort}: duplicates");
    }
}

#[test]
fn paging_sees_inserts_after_the_cursor_but_not_before() {
    let mut things = fleet(50);
    let page = search(&things, None, &opts("sort(+attributes/n),size(10)")).unwrap();
    let cursor = page.cursor.clone().unwrap();
    let last = page.items.last().unwrap().body()["attributes"]["n"]
        .as_i64()
        .unwrap();
    assert_eq!(last, 9);
    things.push(thing("ns:early", json!({"attributes": {"n": 3}})));
    things.push(thing("ns:late", json!({"attributes": {"n": 10}})));
    let next = search(&things, None, &opts(&format!("cursor({cursor}),size(3)"))).unwrap();
    let ns: Vec<String> = ids(&next.items);
    assert_eq!(ns[0], "ns:late", "{ns:?}");
    assert!(!ns.contains(&"ns:early".to_string()));
}

#[test]
fn invalid_cursors() {
    let things = fleet(60);
    let f = Filter::parse("exists(attributes/n)").unwrap();
    let page = search(
        &things,
        Some(&f),
        &opts("sort(+attributes/bucket),size(10)"),
    )
    .unwrap();
    let c = page.cursor.unwrap();
    // Same sort given explicitly: fine.
    assert!(
        search(
            &things,
            Some(&f),
            &opts(&format!("sort(+attributes/bucket),cursor({c})"))
        )
        .is_ok()
    );
    let bad = |options: &str, filter: Option<&Filter>| {
        let e = search(&things, filter, &opts(options)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OptionInvalid, "{options}");
        e
    };
    let e = bad(&format!("sort(-attributes/bucket),cursor({c})"), Some(&f));
    assert!(e.message().contains("sort"), "{}", e.message());
    let e = bad(&format!("cursor({c})"), None);
    assert!(e.message().contains("filter"), "{}", e.message());
    bad("cursor(garbage)", Some(&f));
    bad("cursor(AAAA)", Some(&f));
    // Valid base64 of JSON that is not a cursor.
    use base64::Engine as _;
    let fake = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"v":1,"s":"+a","f":"0","k":[],"t":"x"}"#);
    bad(&format!("cursor({fake})"), None);
    let fake = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"v":2,"s":"","f":"0","k":[],"t":"x"}"#);
    bad(&format!("cursor({fake})"), None);
    // Truncated cursor.
    bad(&format!("cursor({})", &c[..c.len() / 2]), Some(&f));
    // Options built in code are validated too.
    for size in [0, 201] {
        let o = SearchOptions {
            size,
            ..Default::default()
        };
        assert_eq!(
            search(&things, None, &o).unwrap_err().kind(),
            ErrorKind::OptionInvalid
        );
    }
}

#[test]
fn sort_after_thing_id_does_not_matter_for_cursors() {
    let things = fleet(30);
    let page = search(&things, None, &opts("sort(+thingId),size(10)")).unwrap();
    let c = page.cursor.unwrap();
    // Keys after thingId never decide the order, so this is the same sort.
    let next = search(
        &things,
        None,
        &opts(&format!(
            "sort(+thingId,-attributes/n),size(10),cursor({c})"
        )),
    )
    .unwrap();
    assert_eq!(next.items.len(), 10);
    assert!(next.items[0].id().as_str() > page.items[9].id().as_str());
}

// ---- properties ----

fn arb_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just("*".to_string()), "[a-zA-Z_][a-zA-Z0-9_ .:-]{0,6}[a-z]"],
        1..4,
    )
    .prop_map(|segs| segs.join("/"))
}

fn arb_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        (-1e12f64..1e12).prop_map(|f| format!("{f:?}")),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        any::<String>().prop_map(|s| Literal::String(s).to_string()),
    ]
}

fn arb_filter() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            prop::sample::select(vec!["eq", "ne", "gt", "ge", "lt", "le"]),
            arb_path(),
            arb_literal()
        )
            .prop_map(|(op, p, v)| format!("{op}({p},{v})")),
        (
            prop::sample::select(vec!["like", "ilike"]),
            arb_path(),
            any::<String>()
        )
            .prop_map(|(op, p, v)| format!("{op}({p},{})", Literal::String(v))),
        (arb_path(), prop::collection::vec(arb_literal(), 1..4))
            .prop_map(|(p, vs)| format!("in({p},{})", vs.join(","))),
        arb_path().prop_map(|p| format!("exists({p})")),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4)
                .prop_map(|c| format!("and({})", c.join(","))),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|c| format!("or({})", c.join(","))),
            inner.prop_map(|c| format!("not({c})")),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics(s in any::<String>()) {
        let _ = Filter::parse(&s);
        let _ = SearchOptions::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_rql_like_text(s in r#"[a-z()/*,"'\\ 0-9.eE+-]{0,40}"#) {
        if let Ok(f) = Filter::parse(&s) {
            prop_assert_eq!(Filter::parse(&f.to_string()).unwrap(), f);
        }
        let _ = SearchOptions::parse(&s);
    }

    #[test]
    fn generated_filters_round_trip(text in arb_filter(), doc in any::<u8>()) {
        let f = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let canonical = f.to_string();
        let again = Filter::parse(&canonical).map_err(|e| TestCaseError::fail(format!("{canonical}: {e}")))?;
        prop_assert_eq!(&again, &f);
        prop_assert_eq!(again.to_string(), canonical);
        // Evaluating never panics either.
        let doc = json!({"a": doc, "b": [1, "x", null, {"c": true}], "features": {"f": {"properties": {"p": 1.5}}}});
        let _ = f.matches(&doc);
    }

    #[test]
    fn like_agrees_with_a_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
        let pc: Vec<char> = p.chars().collect();
        let tc: Vec<char> = t.chars().collect();
        prop_assert_eq!(eval::like(&p, &t, false), like_reference(&pc, &tc), "{} {}", p, t);
    }

    #[test]
    fn options_round_trip(size in 1usize..=200, desc in any::<bool>(), path in "[a-z]{1,5}(/[a-z]{1,5}){0,2}") {
        let text = format!("size({size}),sort({}{path})", if desc { '-' } else { '+' });
        let o = SearchOptions::parse(&text).unwrap();
        prop_assert_eq!(SearchOptions::parse(&o.to_string()).unwrap(), o);
    }
}

#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn matches_speed() {
    let t = thing(
        "ns:x",
        json!({"attributes": {"a": "x", "b": 1}, "features": {"f": {"properties": {"p": 5, "q": "y"}}}}),
    );
    let f = Filter::parse(r#"and(eq(attributes/a,"x"),gt(features/f/properties/p,3))"#).unwrap();
    let n = 2_000_000u32;
    let start = std::time::Instant::now();
    let mut hits = 0u32;
    for _ in 0..n {
        hits += u32::from(f.matches(std::hint::black_box(&t)));
    }
    let per = start.elapsed() / n;
    assert_eq!(hits, n);
    println!("matches(): {per:?} per evaluation");
}

#[test]
fn filters_of_more_operators_than_the_limit_are_refused() {
    let max = crate::Limits::get().max_rql_nodes;
    let or = |n: usize| {
        let terms: Vec<String> = (0..n).map(|i| format!("eq(attributes/a,{i})")).collect();
        format!("or({})", terms.join(","))
    };
    // `or` plus its terms: exactly the limit parses, one more does not.
    assert!(Filter::parse(&or(max - 1)).is_ok());
    let e = Filter::parse(&or(max)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RqlInvalid);
    assert!(
        e.to_string()
            .contains(&format!("more than {max} operators")),
        "{e}"
    );
    // A node built in code is held to the same limit.
    let terms = (0..max)
        .map(|i| Node::Exists(Path::parse(&format!("attributes/a{i}")).unwrap()))
        .collect();
    assert!(Filter::new(Node::Or(terms)).is_err());
    // A long `in` list is one operator.
    let values: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    assert!(Filter::parse(&format!("in(attributes/a,{})", values.join(","))).is_ok());
}

proptest! {
    /// Offering the matches one at a time and searching only those accepted gives the page a
    /// search over every match gives, on every page.
    #[test]
    fn a_page_select_keeps_what_the_page_needs(
        values in prop::collection::vec(prop::option::of(-5i64..5), 0..60),
        size in 1usize..6,
        desc in any::<bool>(),
    ) {
        let things: Vec<Thing> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let attrs = v.map_or(json!({}), |v| json!({"n": v}));
                thing(&format!("ns:t{i:02}"), json!({"attributes": attrs}))
            })
            .collect();
        let sort = if desc { "sort(-attributes/n)" } else { "sort(+attributes/n)" };
        let mut cursor: Option<String> = None;
        loop {
            let text = match &cursor {
                None => format!("{sort},size({size})"),
                Some(c) => format!("{sort},size({size}),cursor({c})"),
            };
            let options = opts(&text);
            let all = search(&things, None, &options).unwrap();
            let mut select = PageSelect::new(&options).unwrap();
            let accepted: Vec<&Thing> = things.iter().filter(|t| select.offer(t)).collect();
            let page = search(accepted.iter().copied(), None, &options).unwrap();
            prop_assert_eq!(&page.items, &all.items);
            prop_assert_eq!(&page.cursor, &all.cursor);
            prop_assert!(accepted.len() <= things.len());
            match all.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
}

#[test]
fn a_page_select_copies_about_a_page_not_every_match() {
    let things: Vec<Thing> = (0..1000)
        .map(|i| thing(&format!("ns:t{i:04}"), json!({"attributes": {"n": i % 97}})))
        .collect();
    let options = opts("sort(+attributes/n),size(10)");
    let mut select = PageSelect::new(&options).unwrap();
    let accepted: Vec<&Thing> = things.iter().filter(|t| select.offer(t)).collect();
    assert!(accepted.len() < 100, "{} accepted", accepted.len());
    let page = search(accepted.iter().copied(), None, &options).unwrap();
    assert_eq!(page.items, search(&things, None, &options).unwrap().items);
}
