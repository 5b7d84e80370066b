//! Messages of bounded size. The API server refuses a condition message over 32768 bytes and
//! an Event note over 1024, and a route with hundreds of problems must still get a status.

/// The most bytes a condition message may have.
pub(crate) const CONDITION_LIMIT: usize = 32 * 1024;
/// The most bytes an Event note may have.
pub(crate) const EVENT_LIMIT: usize = 1024;

/// Room kept for "; and N more problems not shown".
const NOTE_ROOM: usize = 48;

/// `"{lead}: {item}; {item}. {tail}"` in at most `limit` bytes. Problems that do not fit are
/// counted instead of shown; a first problem too long on its own is cut short.
pub(crate) fn problem_list(lead: &str, items: &[String], tail: &str, limit: usize) -> String {
    let fixed = lead.len() + ": ".len() + ". ".len() + tail.len();
    let mut body = String::new();
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let more_after = i + 1 < items.len();
        let room = limit.saturating_sub(fixed + body.len() + sep.len());
        let needed = item.len() + if more_after { NOTE_ROOM } else { 0 };
        if needed <= room {
            body.push_str(sep);
            body.push_str(item);
            continue;
        }
        let mut rest = items.len() - i;
        if i == 0 {
            let keep = room.saturating_sub(if more_after { NOTE_ROOM } else { 0 });
            body.push_str(&truncate(item, keep));
            rest -= 1;
        }
        if rest > 0 {
            let sep = if body.is_empty() { "" } else { "; " };
            body.push_str(&format!(
                "{sep}and {} not shown",
                count(rest, "more problem")
            ));
        }
        break;
    }
    format!("{lead}: {body}. {tail}")
}

/// "1 problem", "2 problems".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `text` in at most `max` bytes, cut at a character boundary and marked with "…" when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mark = "…";
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0>len$}")).collect()
    }

    #[test]
    fn every_problem_when_they_fit() {
        let m = problem_list(
            "2 problems",
            &["a: x".into(), "b: y".into()],
            "Fix it.",
            100,
        );
        assert_eq!(m, "2 problems: a: x; b: y. Fix it.");
    }

    #[test]
    fn problems_that_do_not_fit_are_counted() {
        let all = items(1000, 100);
        let m = problem_list("1000 problems", &all, "Fix them.", CONDITION_LIMIT);
        assert!(m.len() <= CONDITION_LIMIT, "{}", m.len());
        let shown = m.matches("; ").count();
        assert!(shown > 200, "most of the room is used: {shown}");
        assert!(
            m.contains(&format!(
                "; and {} more problems not shown. Fix them.",
                1000 - shown
            )),
            "{}",
            &m[m.len() - 80..]
        );
    }

    #[test]
    fn a_huge_first_problem_is_cut_and_the_rest_counted() {
        let all = vec!["x".repeat(500), "y".into(), "z".into()];
        let m = problem_list("3 problems", &all, "Fix them.", 200);
        assert!(m.len() <= 200, "{}", m.len());
        assert!(m.starts_with("3 problems: xxx"), "{m}");
        assert!(
            m.ends_with("…; and 2 more problems not shown. Fix them."),
            "{m}"
        );
        let one = problem_list("1 problem", &["x".repeat(500)], "Fix it.", 200);
        assert!(one.len() <= 200 && one.ends_with("…. Fix it."), "{one}");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 10), "héllo");
        let t = truncate("ééééé", 6);
        assert!(t.len() <= 6 && t.ends_with('…'), "{t}");
        assert_eq!(t, "é…");
    }
}
