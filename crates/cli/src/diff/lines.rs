//! A line diff for people: which lines of a resource's JSON a change removes and adds.

/// Past this many line pairs the comparison is not worth it: the whole resource is shown
/// removed, then added.
const MAX_PAIRS: usize = 4_000_000;

/// The lines of `before` and `after` that differ, `-` removed and `+` added, each run with up
/// to `context` unchanged lines (` `) around it; `...` stands for the unchanged lines between
/// runs. Empty when the two are equal.
pub fn changed_lines(before: &str, after: &str, context: usize) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let ops = if a.len().saturating_mul(b.len()) > MAX_PAIRS {
        let removed = a.iter().map(|l| ('-', *l));
        removed.chain(b.iter().map(|l| ('+', *l))).collect()
    } else {
        edits(&a, &b)
    };
    with_context(&ops, context)
}

/// The shortest edit from `a` to `b` by longest common subsequence, line by line.
fn edits<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(char, &'a str)> {
    // common[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out
}

/// Keeps the changed lines and `context` unchanged ones around each.
fn with_context(ops: &[(char, &str)], context: usize) -> Vec<String> {
    let changed: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0 != ' ').collect();
    let near = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= context);
    let mut out = Vec::new();
    let mut skipped = false;
    for (i, (op, line)) in ops.iter().enumerate() {
        if *op != ' ' || near(i) {
            if skipped && !out.is_empty() {
                out.push("...".to_owned());
            }
            skipped = false;
            out.push(format!("{op}{line}"));
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_changed_lines() {
        assert!(changed_lines("a\nb\n", "a\nb\n", 2).is_empty());
    }

    #[test]
    fn a_changed_line_shows_with_its_context_and_gaps() {
        let before = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let after = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(changed_lines(before, after, 1), [" 4", "-5", "+five", " 6"]);
        let added = changed_lines("a\nc\n", "a\nb\nc\n", 0);
        assert_eq!(added, ["+b"]);
    }

    #[test]
    fn separate_runs_are_told_apart() {
        let before = "a\nb\nc\nd\ne\nf\n";
        let after = "A\nb\nc\nd\ne\nF\n";
        assert_eq!(
            changed_lines(before, after, 0),
            ["-a", "+A", "...", "-f", "+F"]
        );
    }
}
