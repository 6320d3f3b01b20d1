//! English given-name alias table: each row is a formal name and the short
//! forms and diminutives clinicians see at registration desks.
//!
//! A name may sit in several groups (`chris` is short for Christopher,
//! Christina and Christine), so a look-up answers a set of group numbers and
//! two names are "nickname-equal" when their sets intersect.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Formal name, then its aliases. All lowercase ASCII, as standardisation
/// produces them.
const GROUPS: &[(&str, &[&str])] = &[
    ("abigail", &["abby", "abbie", "gail"]),
    ("arlene", &["arly", "arlie", "lene"]),
    ("belinda", &["belle", "linda", "lindy"]),
    ("cassandra", &["cassie", "cass", "sandra", "sandy"]),
    ("cecilia", &["celia", "cece", "cissy", "sissy"]),
    ("cornelius", &["connie", "conny", "neil", "neal"]),
    ("eric", &["rick", "ricky", "erik"]),
    ("faith", &["fay", "faye"]),
    ("loretta", &["etta", "lorrie", "retta", "lori"]),
    ("madison", &["maddy", "maddie", "madi"]),
    ("terrence", &["terry", "terence"]),
    ("alexander", &["alex", "alec", "sandy", "xander", "al"]),
    ("alexandra", &["alex", "sandra", "sandy", "lexi", "alexa"]),
    ("albert", &["al", "bert", "bertie"]),
    ("alan", &["al", "allan", "allen"]),
    ("alfred", &["alf", "alfie", "fred", "freddie"]),
    ("andrew", &["andy", "drew", "andie"]),
    ("angela", &["angie", "ange"]),
    ("anthony", &["tony", "ant", "anton"]),
    ("barbara", &["barb", "barbie", "babs"]),
    ("benjamin", &["ben", "benny", "benji"]),
    ("bernard", &["bernie", "barney"]),
    ("bradley", &["brad"]),
    (
        "catherine",
        &["cathy", "cath", "kate", "katie", "kathy", "cate", "kat"],
    ),
    (
        "katherine",
        &["kathy", "kate", "katie", "kat", "kathryn", "kitty"],
    ),
    ("charles", &["charlie", "chuck", "chas", "chaz", "chick"]),
    ("charlotte", &["charlie", "lottie", "lotte"]),
    ("christopher", &["chris", "kit", "topher"]),
    ("christine", &["chris", "chrissy", "tina", "christina"]),
    ("cynthia", &["cindy"]),
    ("daniel", &["dan", "danny"]),
    ("danielle", &["dani", "elle"]),
    ("david", &["dave", "davey", "davy"]),
    ("deborah", &["deb", "debbie", "debra"]),
    ("dominic", &["dom", "nic"]),
    ("donald", &["don", "donny"]),
    ("dorothy", &["dot", "dottie", "dolly"]),
    ("edward", &["ed", "eddie", "ted", "teddy", "ned"]),
    (
        "elizabeth",
        &[
            "liz", "lizzie", "beth", "betty", "bette", "eliza", "elise", "libby", "lisa", "betsy",
        ],
    ),
    ("emily", &["em", "emmy", "millie"]),
    ("eleanor", &["ellie", "nell", "nora", "elle"]),
    ("frances", &["fran", "frannie", "fanny"]),
    ("francis", &["frank", "fran"]),
    ("frederick", &["fred", "freddie", "fritz"]),
    ("gabriel", &["gabe"]),
    ("gabrielle", &["gabby", "gabi", "elle"]),
    ("gregory", &["greg"]),
    ("harold", &["harry", "hal"]),
    ("henry", &["harry", "hank", "hal"]),
    ("isabella", &["bella", "izzy", "isabel", "isabelle"]),
    ("jacob", &["jake", "jack"]),
    ("james", &["jim", "jimmy", "jamie", "jimmie", "jem"]),
    ("jennifer", &["jen", "jenny", "jenn"]),
    ("jessica", &["jess", "jessie"]),
    ("john", &["jack", "johnny", "jon", "jonny"]),
    ("jonathan", &["jon", "jonny", "nathan", "johnny"]),
    ("joseph", &["joe", "joey", "jo"]),
    ("josephine", &["jo", "josie"]),
    ("joshua", &["josh"]),
    ("judith", &["judy", "jude"]),
    ("kenneth", &["ken", "kenny"]),
    ("kimberly", &["kim", "kimmy"]),
    ("lawrence", &["larry", "laurie", "laurence"]),
    ("leonard", &["len", "lenny", "leo"]),
    ("louis", &["lou", "louie"]),
    ("louise", &["lou", "lulu"]),
    ("madeline", &["maddie", "maddy", "madeleine"]),
    (
        "margaret",
        &[
            "maggie", "meg", "peggy", "marge", "margie", "greta", "rita", "madge",
        ],
    ),
    ("matthew", &["matt", "matty"]),
    ("michael", &["mike", "mick", "mickey", "mikey", "mitch"]),
    ("michelle", &["shelly", "shell", "chelle"]),
    ("nathaniel", &["nat", "nate", "nathan"]),
    ("nicholas", &["nick", "nicky", "nic", "klaus"]),
    ("nicole", &["nikki", "nicky", "nic"]),
    ("oliver", &["ollie", "olly"]),
    ("olivia", &["liv", "livvy", "ollie"]),
    ("patricia", &["pat", "patty", "patti", "trish", "tricia"]),
    ("patrick", &["pat", "paddy", "rick"]),
    ("peter", &["pete"]),
    ("philip", &["phil", "pip", "phillip"]),
    ("rebecca", &["becky", "becca", "bec"]),
    ("richard", &["rick", "ricky", "dick", "rich", "richie"]),
    (
        "robert",
        &["rob", "robbie", "bob", "bobby", "bert", "robin"],
    ),
    ("ronald", &["ron", "ronnie", "ronny"]),
    ("samantha", &["sam", "sammy"]),
    ("samuel", &["sam", "sammy"]),
    ("sarah", &["sally", "sadie", "sara"]),
    ("stephen", &["steve", "stevie", "steven"]),
    ("susan", &["sue", "susie", "suzy"]),
    ("theodore", &["theo", "ted", "teddy"]),
    ("thomas", &["tom", "tommy"]),
    ("timothy", &["tim", "timmy"]),
    ("victoria", &["vicky", "vickie", "tori", "vic"]),
    ("vincent", &["vince", "vinnie"]),
    ("virginia", &["ginny", "ginger"]),
    ("walter", &["walt", "wally"]),
    (
        "william",
        &["will", "bill", "billy", "willy", "liam", "willie"],
    ),
    ("zachary", &["zach", "zack", "zak"]),
];

fn table() -> &'static HashMap<&'static str, Vec<u16>> {
    static TABLE: OnceLock<HashMap<&'static str, Vec<u16>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<u16>> = HashMap::new();
        for (group, (formal, aliases)) in (0u16..).zip(GROUPS) {
            for name in std::iter::once(formal).chain(aliases.iter()) {
                let groups = map.entry(name).or_default();
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        map
    })
}

/// The alias groups a standardised given-name token belongs to (empty when
/// the table does not know it).
pub fn groups(token: &str) -> &'static [u16] {
    table().get(token).map(Vec::as_slice).unwrap_or(&[])
}

/// Whether two group sets share a group.
pub fn intersects(a: &[u16], b: &[u16]) -> bool {
    a.iter().any(|g| b.contains(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_pairs() {
        let cases = [
            ("bill", "william", true),
            ("liam", "william", true),
            ("bob", "robert", true),
            ("bob", "rob", true),
            ("chris", "christine", true),
            ("chris", "christopher", true),
            ("christine", "christopher", false),
            ("kate", "katherine", true),
            ("peggy", "margaret", true),
            ("jack", "john", true),
            ("jack", "jacob", true),
            ("john", "jacob", false),
            ("zelda", "zelda", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(intersects(groups(a), groups(b)), want, "{a} ~ {b}");
        }
    }
}
