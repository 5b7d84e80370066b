//! The named classes RE2 knows: Perl's (`\d`), POSIX's (`[:alpha:]`) and Unicode's
//! (`\pL`, `\p{Greek}`). Envoy's RE2 works in Latin-1, where every class is cut to
//! `\x00-\xff`, so only that part of a Unicode group matters: the tables hold just it.

/// A named class: its ranges, and whether a name means the class or its complement.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    pub(crate) ranges: &'static [(u32, u32)],
    pub(crate) negated: bool,
}

const fn group(ranges: &'static [(u32, u32)]) -> Group {
    Group {
        ranges,
        negated: false,
    }
}

const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const PERL_SPACE: &[(u32, u32)] = &[(0x09, 0x0a), (0x0c, 0x0d), (0x20, 0x20)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];

/// `\d`, `\s`, `\w` and their capitals (`perl_groups.cc`): ASCII only.
pub(crate) fn perl(c: u32) -> Option<Group> {
    let ranges = match char::from_u32(c)?.to_ascii_lowercase() {
        'd' => DIGIT,
        's' => PERL_SPACE,
        'w' => WORD,
        _ => return None,
    };
    let negated = char::from_u32(c).is_some_and(|c| c.is_ascii_uppercase());
    Some(Group { ranges, negated })
}

/// `[:alpha:]` and `[:^alpha:]` (`posix_groups`): `name` is what is between `[:` and `:]`.
pub(crate) fn posix(name: &str) -> Option<Group> {
    let (negated, name) = match name.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let ranges: &[(u32, u32)] = match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x00, 0x7f)],
        "blank" => &[(0x09, 0x09), (0x20, 0x20)],
        "cntrl" => &[(0x00, 0x1f), (0x7f, 0x7f)],
        "digit" => DIGIT,
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x09, 0x0d), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => WORD,
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    };
    Some(Group { ranges, negated })
}

const LU: &[(u32, u32)] = &[(0x41, 0x5a), (0xc0, 0xd6), (0xd8, 0xde)];
const LL: &[(u32, u32)] = &[(0x61, 0x7a), (0xb5, 0xb5), (0xdf, 0xf6), (0xf8, 0xff)];
const LO: &[(u32, u32)] = &[(0xaa, 0xaa), (0xba, 0xba)];
const L: &[(u32, u32)] = &[
    (0x41, 0x5a),
    (0x61, 0x7a),
    (0xaa, 0xaa),
    (0xb5, 0xb5),
    (0xba, 0xba),
    (0xc0, 0xd6),
    (0xd8, 0xf6),
    (0xf8, 0xff),
];
const LATIN: &[(u32, u32)] = &[
    (0x41, 0x5a),
    (0x61, 0x7a),
    (0xaa, 0xaa),
    (0xba, 0xba),
    (0xc0, 0xd6),
    (0xd8, 0xf6),
    (0xf8, 0xff),
];
const COMMON: &[(u32, u32)] = &[
    (0x00, 0x40),
    (0x5b, 0x60),
    (0x7b, 0xa9),
    (0xab, 0xb9),
    (0xbb, 0xbf),
    (0xd7, 0xd7),
    (0xf7, 0xf7),
];
const PO: &[(u32, u32)] = &[
    (0x21, 0x23),
    (0x25, 0x27),
    (0x2a, 0x2a),
    (0x2c, 0x2c),
    (0x2e, 0x2f),
    (0x3a, 0x3b),
    (0x3f, 0x40),
    (0x5c, 0x5c),
    (0xa1, 0xa1),
    (0xa7, 0xa7),
    (0xb6, 0xb7),
    (0xbf, 0xbf),
];
const P: &[(u32, u32)] = &[
    (0x21, 0x23),
    (0x25, 0x2a),
    (0x2c, 0x2f),
    (0x3a, 0x3b),
    (0x3f, 0x40),
    (0x5b, 0x5d),
    (0x5f, 0x5f),
    (0x7b, 0x7b),
    (0x7d, 0x7d),
    (0xa1, 0xa1),
    (0xa7, 0xa7),
    (0xab, 0xab),
    (0xb6, 0xb7),
    (0xbb, 0xbb),
    (0xbf, 0xbf),
];
const SM: &[(u32, u32)] = &[
    (0x2b, 0x2b),
    (0x3c, 0x3e),
    (0x7c, 0x7c),
    (0x7e, 0x7e),
    (0xac, 0xac),
    (0xb1, 0xb1),
    (0xd7, 0xd7),
    (0xf7, 0xf7),
];
const SK: &[(u32, u32)] = &[
    (0x5e, 0x5e),
    (0x60, 0x60),
    (0xa8, 0xa8),
    (0xaf, 0xaf),
    (0xb4, 0xb4),
    (0xb8, 0xb8),
];
const S: &[(u32, u32)] = &[
    (0x24, 0x24),
    (0x2b, 0x2b),
    (0x3c, 0x3e),
    (0x5e, 0x5e),
    (0x60, 0x60),
    (0x7c, 0x7c),
    (0x7e, 0x7e),
    (0xa2, 0xa6),
    (0xa8, 0xa9),
    (0xac, 0xac),
    (0xae, 0xb1),
    (0xb4, 0xb4),
    (0xb8, 0xb8),
    (0xd7, 0xd7),
    (0xf7, 0xf7),
];
const NO: &[(u32, u32)] = &[(0xb2, 0xb3), (0xb9, 0xb9), (0xbc, 0xbe)];
const N: &[(u32, u32)] = &[(0x30, 0x39), (0xb2, 0xb3), (0xb9, 0xb9), (0xbc, 0xbe)];
const CC: &[(u32, u32)] = &[(0x00, 0x1f), (0x7f, 0x9f)];
const C: &[(u32, u32)] = &[(0x00, 0x1f), (0x7f, 0x9f), (0xad, 0xad)];
const SPACE_SEPARATOR: &[(u32, u32)] = &[(0x20, 0x20), (0xa0, 0xa0)];

/// The general categories with members in Latin-1 (Unicode's, as RE2 groups them: a letter
/// alone is the union of its two-letter categories).
fn category(name: &str) -> Option<&'static [(u32, u32)]> {
    Some(match name {
        "C" => C,
        "Cc" => CC,
        "Cf" => &[(0xad, 0xad)],
        "L" => L,
        "Ll" => LL,
        "Lo" => LO,
        "Lu" => LU,
        "N" => N,
        "Nd" => DIGIT,
        "No" => NO,
        "P" => P,
        "Pc" => &[(0x5f, 0x5f)],
        "Pd" => &[(0x2d, 0x2d)],
        "Pe" => &[(0x29, 0x29), (0x5d, 0x5d), (0x7d, 0x7d)],
        "Pf" => &[(0xbb, 0xbb)],
        "Pi" => &[(0xab, 0xab)],
        "Po" => PO,
        "Ps" => &[(0x28, 0x28), (0x5b, 0x5b), (0x7b, 0x7b)],
        "S" => S,
        "Sc" => &[(0x24, 0x24), (0xa2, 0xa5)],
        "Sk" => SK,
        "Sm" => SM,
        "So" => &[(0xa6, 0xa6), (0xa9, 0xa9), (0xae, 0xae), (0xb0, 0xb0)],
        "Z" | "Zs" => SPACE_SEPARATOR,
        _ => return None,
    })
}

/// The groups RE2 knows that have no member in Latin-1: categories, then the scripts of
/// Unicode 15.1 (RE2 2024's tables; Unicode 16's new scripts are unknown to it).
const EMPTY_IN_LATIN1: &[&str] = &[
    "Co",
    "Cs",
    "Lm",
    "Lt",
    "M",
    "Mc",
    "Me",
    "Mn",
    "Nl",
    "Zl",
    "Zp",
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cypro_Minoan",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kawi",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nag_Mundari",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Old_Uyghur",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangsa",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Toto",
    "Ugaritic",
    "Vai",
    "Vithkuqi",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
];

/// A Unicode group by its exact name (`\p{Greek}`, `\pL`, `\p{Any}`), cut to Latin-1 but
/// for `Any`, which is every rune.
pub(crate) fn unicode(name: &str) -> Option<Group> {
    match name {
        "Any" => Some(group(&[(0, crate::class::RUNE_MAX)])),
        "Latin" => Some(group(LATIN)),
        "Common" => Some(group(COMMON)),
        _ if EMPTY_IN_LATIN1.contains(&name) => Some(group(&[])),
        _ => category(name).map(group),
    }
}

/// Whether RE2 takes `c` in a capture group's name: a rune of the categories Lu, Ll, Lt,
/// Lm, Lo, Nl, Mn, Mc, Nd or Pc.
pub(crate) fn is_capture_name_rune(c: u32) -> bool {
    [LU, LL, LO, DIGIT, &[(0x5f, 0x5f)][..]]
        .iter()
        .any(|ranges| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ranges: &[(u32, u32)]) -> Vec<u32> {
        ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }

    #[test]
    fn one_letter_categories_are_the_union_of_their_two_letter_ones() {
        let union = |names: &[&str]| {
            let mut all: Vec<u32> = names
                .iter()
                .flat_map(|n| members(unicode(n).expect(n).ranges))
                .collect();
            all.sort_unstable();
            all
        };
        for (one, two) in [
            ("C", &["Cc", "Cf", "Co", "Cs"][..]),
            ("L", &["Lu", "Ll", "Lt", "Lm", "Lo"]),
            ("N", &["Nd", "Nl", "No"]),
            ("P", &["Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"]),
            ("S", &["Sm", "Sc", "Sk", "So"]),
            ("Z", &["Zs", "Zl", "Zp"]),
        ] {
            assert_eq!(
                members(unicode(one).expect(one).ranges),
                union(two),
                "{one}"
            );
        }
    }

    #[test]
    fn latin_and_common_split_latin1_between_them() {
        let mut all = members(LATIN);
        all.extend(members(COMMON));
        all.sort_unstable();
        assert_eq!(all, (0..=0xff).collect::<Vec<_>>());
    }

    #[test]
    fn perl_capitals_are_complements() {
        let d = perl(u32::from(b'D')).expect("\\D");
        assert!(d.negated && d.ranges == DIGIT);
        assert!(perl(u32::from(b'q')).is_none());
        assert!(posix("^alpha").expect("[:^alpha:]").negated);
        assert!(posix("Alpha").is_none());
    }
}
