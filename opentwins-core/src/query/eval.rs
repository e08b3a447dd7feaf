//! Evaluation of filters against documents, and the value orderings used by filters and sorting.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use super::Document;
use super::ast::{CmpOp, Literal, Node, Path, Segment};

impl Node {
    /// Whether `doc` satisfies this node. Recursion follows the node's depth, which
    /// [`super::Filter`] bounds.
    pub(super) fn eval<D: Document + ?Sized>(&self, doc: &D) -> bool {
        match self {
            Node::And(children) => children.iter().all(|c| c.eval(doc)),
            Node::Or(children) => children.iter().any(|c| c.eval(doc)),
            Node::Not(child) => !child.eval(doc),
            Node::Exists(path) => any_value(doc, path, &mut |_| true),
            Node::In { path, values } => {
                any_value(doc, path, &mut |v| values.iter().any(|l| eq_match(v, l)))
            }
            Node::Compare {
                op: CmpOp::Ne,
                path,
                value,
            } => {
                // ne = the property exists and eq does not hold.
                let mut exists = false;
                let equal = any_value(doc, path, &mut |v| {
                    exists = true;
                    eq_match(v, value)
                });
                exists && !equal
            }
            Node::Compare {
                op: CmpOp::Eq,
                path,
                value,
            } => any_value(doc, path, &mut |v| eq_match(v, value)),
            Node::Compare {
                op: op @ (CmpOp::Like | CmpOp::ILike),
                path,
                value,
            } => {
                let Literal::String(pattern) = value else {
                    return false;
                };
                let ci = *op == CmpOp::ILike;
                any_value(doc, path, &mut |v| {
                    with_elements(v, |v| v.as_str().is_some_and(|s| like(pattern, s, ci)))
                })
            }
            Node::Compare { op, path, value } => {
                let op = *op;
                any_value(doc, path, &mut |v| {
                    with_elements(v, |v| {
                        order_lit(v, value).is_some_and(|o| match op {
                            CmpOp::Gt => o == Ordering::Greater,
                            CmpOp::Ge => o != Ordering::Less,
                            CmpOp::Lt => o == Ordering::Less,
                            CmpOp::Le => o != Ordering::Greater,
                            _ => false,
                        })
                    })
                })
            }
        }
    }
}

/// Calls `f` on every value `path` resolves to in `doc`.
pub(super) fn for_each_value<D: Document + ?Sized>(
    doc: &D,
    path: &Path,
    f: &mut dyn FnMut(&Value),
) {
    any_value(doc, path, &mut |v| {
        f(v);
        false
    });
}

/// Calls `f` on every value `path` resolves to in `doc`, stopping at the first `true`.
fn any_value<D: Document + ?Sized>(
    doc: &D,
    path: &Path,
    f: &mut dyn FnMut(&Value) -> bool,
) -> bool {
    let Some((first, rest)) = path.segments().split_first() else {
        return false;
    };
    match first {
        Segment::Key(k) => doc.field(k).is_some_and(|v| visit(&v, rest, f)),
        Segment::Any => doc
            .keys()
            .iter()
            .any(|k| doc.field(k).is_some_and(|v| visit(&v, rest, f))),
    }
}

/// Walks `segs` from `v`. Plain keys walk iteratively; fan-out (a wildcard, or an array crossed by
/// a key) recurses once per level, so recursion depth is bounded by the path length
/// ([`super::MAX_PATH_SEGMENTS`]).
fn visit(mut v: &Value, mut segs: &[Segment], f: &mut dyn FnMut(&Value) -> bool) -> bool {
    loop {
        let Some((seg, rest)) = segs.split_first() else {
            return f(v);
        };
        match (seg, v) {
            (Segment::Key(k), Value::Object(m)) => match m.get(k) {
                Some(child) => {
                    v = child;
                    segs = rest;
                }
                None => return false,
            },
            (Segment::Key(k), Value::Array(items)) => {
                // An index selects one element; otherwise the key applies to every element.
                if let Some(item) = k.parse::<usize>().ok().and_then(|i| items.get(i))
                    && visit(item, rest, f)
                {
                    return true;
                }
                return items
                    .iter()
                    .any(|item| item.is_object() && visit(item, segs, f));
            }
            (Segment::Any, Value::Object(m)) => return m.values().any(|c| visit(c, rest, f)),
            (Segment::Any, Value::Array(items)) => return items.iter().any(|c| visit(c, rest, f)),
            _ => return false,
        }
    }
}

/// `test(v)`, or `test` on any element when `v` is an array (one level, MongoDB style).
fn with_elements(v: &Value, test: impl Fn(&Value) -> bool) -> bool {
    test(v) || v.as_array().is_some_and(|items| items.iter().any(&test))
}

/// `eq` on one resolved value: equal, or an array with an equal element.
fn eq_match(v: &Value, lit: &Literal) -> bool {
    with_elements(v, |v| scalar_eq(v, lit))
}

fn scalar_eq(v: &Value, lit: &Literal) -> bool {
    match (v, lit) {
        (Value::Null, Literal::Null) => true,
        (Value::Bool(a), Literal::Bool(b)) => a == b,
        (Value::Number(a), Literal::Number(b)) => cmp_numbers(a, b) == Ordering::Equal,
        (Value::String(a), Literal::String(b)) => a == b,
        _ => false,
    }
}

/// How `v` compares with `lit`, when both are numbers or both are strings.
fn order_lit(v: &Value, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Value::Number(a), Literal::Number(b)) => Some(cmp_numbers(a, b)),
        (Value::String(a), Literal::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

/// Numeric comparison of JSON numbers, exact between integers and between an integer and a float.
pub(super) fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    fn int(n: &Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    match (int(a), int(b), a.as_f64(), b.as_f64()) {
        (Some(x), Some(y), _, _) => x.cmp(&y),
        (Some(x), None, _, Some(y)) => cmp_int_float(x, y),
        (None, Some(y), Some(x), _) => cmp_int_float(y, x).reverse(),
        (_, _, Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => Ordering::Equal,
    }
}

/// Exact comparison of an integer (|i| < 2^65) with a finite float.
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    const LIMIT: f64 = 1.0e30; // far outside the range of i64/u64 values
    if f.is_nan() {
        return Ordering::Equal;
    }
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f <= -LIMIT {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i128)) {
        Ordering::Equal if f > t => Ordering::Less,
        Ordering::Equal if f < t => Ordering::Greater,
        o => o,
    }
}

/// Wildcard match: `*` any sequence, `?` exactly one character, the rest literal. Linear space,
/// no allocation; worst case O(pattern × text).
pub(super) fn like(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let same =
        |a: char, b: char| a == b || (case_insensitive && a.to_lowercase().eq(b.to_lowercase()));
    let (mut p, mut t) = (0usize, 0usize);
    // After the last `*`: where the pattern resumes, and where the text resumed.
    let mut star: Option<(usize, usize)> = None;
    loop {
        let Some(tc) = text[t..].chars().next() else {
            return pattern[p..].chars().all(|c| c == '*');
        };
        match pattern[p..].chars().next() {
            Some('*') => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            Some('?') => {
                p += 1;
                t += tc.len_utf8();
                continue;
            }
            Some(pc) if same(pc, tc) => {
                p += pc.len_utf8();
                t += tc.len_utf8();
                continue;
            }
            _ => {}
        }
        let Some((sp, st)) = star else { return false };
        // Let the last `*` absorb one more character and retry.
        let skipped = text[st..].chars().next().map_or(1, char::len_utf8);
        star = Some((sp, st + skipped));
        p = sp;
        t = st + skipped;
    }
}

/// Rank of a JSON type in the sort order: missing < null < bool < number < string < array < object.
fn type_rank(v: Option<&Value>) -> u8 {
    match v {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

/// The total order used for sorting: by type rank, then within the type (numbers numerically,
/// strings by code points, arrays and objects element by element). Nested containers are
/// compared down to a fixed depth, below which they count as equal.
pub(super) fn total_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    total_cmp_depth(a, b, 0)
}

fn total_cmp_depth(a: Option<&Value>, b: Option<&Value>, depth: usize) -> Ordering {
    const MAX_COMPARE_DEPTH: usize = 32;
    let rank = type_rank(a).cmp(&type_rank(b));
    if rank != Ordering::Equal {
        return rank;
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => cmp_numbers(x, y),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ if depth >= MAX_COMPARE_DEPTH => Ordering::Equal,
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for (p, q) in x.iter().zip(y) {
                let o = total_cmp_depth(Some(p), Some(q), depth + 1);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for ((kp, p), (kq, q)) in x.iter().zip(y) {
                let o = kp
                    .cmp(kq)
                    .then_with(|| total_cmp_depth(Some(p), Some(q), depth + 1));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => Ordering::Equal,
    }
}

/// The single value at a path of plain keys (no wildcards, no array fan-out; a numeric key
/// indexes an array), for sorting.
pub(super) fn single_value<'a, D: Document + ?Sized>(
    doc: &'a D,
    path: &Path,
) -> Option<Cow<'a, Value>> {
    let (first, rest) = path.segments().split_first()?;
    let Segment::Key(first) = first else {
        return None;
    };
    match doc.field(first)? {
        Cow::Borrowed(v) => walk_keys(v, rest).map(Cow::Borrowed),
        Cow::Owned(v) if rest.is_empty() => Some(Cow::Owned(v)),
        // An owned top-level value (e.g. `_metadata` of some documents): clone what is found.
        Cow::Owned(v) => walk_keys(&v, rest).cloned().map(Cow::Owned),
    }
}

fn walk_keys<'v>(mut v: &'v Value, segs: &[Segment]) -> Option<&'v Value> {
    for seg in segs {
        let Segment::Key(k) = seg else { return None };
        v = match v {
            Value::Object(m) => m.get(k)?,
            Value::Array(items) => items.get(k.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}
