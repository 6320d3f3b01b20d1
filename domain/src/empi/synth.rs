//! A seeded generator of labelled patient records with registration-desk
//! noise, for evaluation, property tests and benchmarks.
//!
//! Each synthetic person gets one original record and up to three
//! duplicates from other sources. Duplicates carry typos, nicknames, swapped
//! given/family names, day↔month transpositions and one-digit date errors,
//! partial or missing birth dates, moves to a new address, new phone
//! numbers, married names and missing fields. Family names follow a skewed
//! frequency so some are common. The same seed always gives the same data.
//!
//! Two vocabularies: [`Vocabulary::Dense`] draws from a few hundred names,
//! 20 cities and 100 postal codes, so that even a few thousand people share
//! many names and places (a hard evaluation set); [`Vocabulary::Population`]
//! adds long tails of composed family names (about 23,000), given names,
//! towns and streets, shaped like a national population (the commonest
//! family name about 1 % of people, as in published census tables), for
//! benchmarks at a million records where the dense lists would put one
//! person in five under the same family name.

use crate::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone, Sex};

use super::model::SplitMix64;
use super::standardise::Record;

const FEMALE: &[&str] = &[
    "Margaret",
    "Elizabeth",
    "Catherine",
    "Katherine",
    "Sarah",
    "Jennifer",
    "Patricia",
    "Susan",
    "Deborah",
    "Rebecca",
    "Jessica",
    "Emily",
    "Olivia",
    "Charlotte",
    "Isabella",
    "Abigail",
    "Victoria",
    "Nicole",
    "Michelle",
    "Samantha",
    "Christine",
    "Alexandra",
    "Zoë",
    "Chloe",
    "Mia",
    "Grace",
    "Hannah",
    "Amelia",
    "Sophie",
    "Ruby",
    "Ava",
    "Lily",
    "Ella",
    "Matilda",
    "Aaliyah",
    "Priya",
    "Mei",
    "Siobhan",
    "Ngaio",
    "Fatima",
];
const MALE: &[&str] = &[
    "William",
    "Robert",
    "James",
    "John",
    "Michael",
    "David",
    "Richard",
    "Thomas",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Joseph",
    "Andrew",
    "Benjamin",
    "Samuel",
    "Nicholas",
    "Edward",
    "Alexander",
    "Jonathan",
    "Patrick",
    "Peter",
    "Stephen",
    "Timothy",
    "Oliver",
    "Jack",
    "Noah",
    "Liam",
    "Lachlan",
    "Hamish",
    "José",
    "Mohammed",
    "Wei",
    "Arjun",
    "Tane",
    "Kieran",
    "Declan",
    "Lucas",
    "Ethan",
    "Harrison",
];
const NICK: &[(&str, &[&str])] = &[
    ("Margaret", &["Maggie", "Peggy", "Meg"]),
    ("Elizabeth", &["Liz", "Beth", "Betty"]),
    ("Catherine", &["Cathy", "Kate"]),
    ("Katherine", &["Kate", "Kathy"]),
    ("Patricia", &["Pat", "Trish"]),
    ("Susan", &["Sue"]),
    ("Deborah", &["Debbie", "Deb"]),
    ("Rebecca", &["Becky", "Bec"]),
    ("Jessica", &["Jess"]),
    ("Victoria", &["Vicky", "Tori"]),
    ("Samantha", &["Sam"]),
    ("Alexandra", &["Alex", "Sandra"]),
    ("William", &["Bill", "Will", "Liam"]),
    ("Robert", &["Bob", "Rob", "Bobby"]),
    ("James", &["Jim", "Jimmy", "Jamie"]),
    ("Michael", &["Mike", "Mick"]),
    ("David", &["Dave"]),
    ("Richard", &["Rick", "Dick", "Rich"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("Christopher", &["Chris"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Matthew", &["Matt"]),
    ("Anthony", &["Tony"]),
    ("Joseph", &["Joe"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Benjamin", &["Ben"]),
    ("Samuel", &["Sam"]),
    ("Nicholas", &["Nick"]),
    ("Edward", &["Ed", "Ted", "Eddie"]),
    ("Alexander", &["Alex"]),
    ("Jonathan", &["Jon"]),
    ("Patrick", &["Pat", "Paddy"]),
    ("Stephen", &["Steve"]),
    ("Timothy", &["Tim"]),
];
const FAMILY: &[&str] = &[
    "Smith",
    "Jones",
    "Williams",
    "Brown",
    "Wilson",
    "Taylor",
    "Nguyen",
    "Johnson",
    "Martin",
    "White",
    "Anderson",
    "Walker",
    "Thompson",
    "Thomas",
    "Lee",
    "Ryan",
    "Harris",
    "King",
    "Robinson",
    "Kelly",
    "Clarke",
    "Wright",
    "Mitchell",
    "Campbell",
    "Baker",
    "Young",
    "Hughes",
    "Edwards",
    "Stewart",
    "Evans",
    "Murphy",
    "Roberts",
    "Turner",
    "Scott",
    "Morris",
    "Green",
    "Hall",
    "Cooper",
    "Wood",
    "Murray",
    "O'Brien",
    "McDonald",
    "Van der Berg",
    "Müller",
    "García",
    "Papadopoulos",
    "Kowalski",
    "Singh",
    "Patel",
    "Chen",
    "Wang",
    "Zhang",
    "Li",
    "Tran",
    "Pham",
    "Le",
    "Kaur",
    "Ahmed",
    "Hassan",
    "Rossi",
    "Russo",
    "Ferrari",
    "Costa",
    "Silva",
    "Santos",
    "Novak",
    "Horvat",
    "Nielsen",
    "Jensen",
    "Andersson",
    "Johansson",
    "Dubois",
    "Lefebvre",
    "Fitzgerald",
    "Gallagher",
    "O'Connor",
    "Sullivan",
    "Byrne",
    "McCarthy",
    "Doherty",
    "Fraser",
    "Henderson",
    "Paterson",
    "Vanstone",
    "Pennington",
    "Ashworth",
    "Blackwood",
    "Carmichael",
    "Drummond",
    "Ellsworth",
    "Fairweather",
    "Greenhalgh",
    "Hargreaves",
    "Illingworth",
    "Jeffries",
    "Kettering",
    "Longbottom",
    "Merriweather",
    "Northcott",
    "Oldfield",
];
const STREETS: &[&str] = &[
    "Long",
    "Short",
    "High",
    "Church",
    "Station",
    "Victoria",
    "George",
    "King",
    "Queen",
    "Park",
    "Hill",
    "Bay",
    "River",
    "Forest",
    "Ocean",
    "Wattle",
    "Banksia",
    "Acacia",
    "Eucalypt",
    "Jacaranda",
    "Macquarie",
    "Flinders",
    "Bourke",
    "Collins",
    "Pitt",
    "Elizabeth",
    "Hunter",
    "Oxford",
    "Cambridge",
    "Melrose",
    "Stanley",
    "Carrington",
    "Pinkerton",
    "Salkauskas",
    "Lambrigg",
    "Edkins",
    "Lyster",
];
const STREET_TYPES: &[&str] = &[
    "Street", "St", "Road", "Rd", "Avenue", "Crescent", "Place", "Drive", "Court",
];
const CITIES: &[(&str, &str)] = &[
    ("Canberra", "ACT"),
    ("Queanbeyan", "NSW"),
    ("Goulburn", "NSW"),
    ("Wollongong", "NSW"),
    ("Newcastle", "NSW"),
    ("Parramatta", "NSW"),
    ("Ballarat", "VIC"),
    ("Bendigo", "VIC"),
    ("Geelong", "VIC"),
    ("Toowoomba", "QLD"),
    ("Cairns", "QLD"),
    ("Townsville", "QLD"),
    ("Fremantle", "WA"),
    ("Bunbury", "WA"),
    ("Glenelg", "SA"),
    ("Launceston", "TAS"),
    ("Hobart", "TAS"),
    ("Darwin", "NT"),
    ("Alice Springs", "NT"),
    ("Mildura", "VIC"),
];

/// Composed names of the population vocabulary: onset, middle, ending.
const ONSETS: &[&str] = &[
    "Ab", "Al", "Ash", "Bar", "Bel", "Bl", "Br", "Cal", "Car", "Ch", "Cr", "Dal", "Dar", "Den",
    "Dr", "Ed", "El", "Fal", "Far", "Fen", "Gar", "Gil", "Gr", "Hal", "Har", "Hol", "Kel", "Ken",
    "Kin", "Lan", "Lar", "Lind", "Mal", "Mar", "Mor", "Nor", "Ol", "Pen", "Pr", "Ram", "Ren",
    "Ros", "Sal", "Sh", "St", "Tal", "Tr", "Val", "War", "Wil", "Yar", "Zel",
];
const MIDDLES: &[&str] = &[
    "a", "e", "i", "o", "u", "ar", "en", "in", "on", "el", "is", "ot", "am", "ur", "ey",
];
const FAMILY_ENDINGS: &[&str] = &[
    "berg", "by", "combe", "dale", "den", "ford", "gate", "ham", "hurst", "ington", "kins", "land",
    "ley", "low", "man", "more", "ner", "ridge", "son", "ston", "ton", "ville", "well", "wick",
    "wood", "worth", "ski", "escu", "ov", "ak",
];
const FEMALE_ENDINGS: &[&str] = &[
    "a", "ella", "ina", "ette", "ia", "elle", "yn", "ie", "ara", "issa",
];
const MALE_ENDINGS: &[&str] = &["an", "en", "on", "ard", "ius", "o", "el", "ek", "ias", "us"];
const PLACE_ENDINGS: &[&str] = &[
    "ton", "ville", "burg", "field", "wood", "bridge", "port", "dale", "ford", "mount",
];

/// Which names and places the generator draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vocabulary {
    /// A few hundred names, 20 cities, 100 postal codes: dense on purpose.
    #[default]
    Dense,
    /// The dense lists plus long composed tails, shaped like a population.
    Population,
}

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Distinct people.
    pub people: usize,
    /// Seed.
    pub seed: u64,
    /// Probability of each extra duplicate (up to three per person).
    pub duplicate_rate: f64,
    /// Share of records carrying a national identifier.
    pub national_id_rate: f64,
    /// Names and places drawn from.
    pub vocabulary: Vocabulary,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            people: 5000,
            seed: 42,
            duplicate_rate: 0.45,
            national_id_rate: 0.6,
            vocabulary: Vocabulary::Dense,
        }
    }
}

/// A record with the person it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// The record.
    pub record: Record,
    /// The true person (0-based).
    pub person: u32,
}

#[derive(Clone)]
struct Person {
    given: String,
    family: String,
    sex: Sex,
    year: u16,
    month: u8,
    day: u8,
    number: u32,
    street: String,
    city: usize,
    postcode: String,
    phone: String,
    national: String,
}

fn pick<'a>(rng: &mut SplitMix64, xs: &[&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Skewed choice: low indexes are much more common (family-name frequencies).
fn skewed(rng: &mut SplitMix64, n: usize) -> usize {
    let x = rng.unit();
    ((x * x * x) * n as f64) as usize % n
}

fn digits(rng: &mut SplitMix64, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

/// Towns of the population vocabulary beyond the 20 dense cities.
const TOWNS: usize = 480;

fn composed(onset: usize, ending: &str) -> String {
    format!("{}{}", ONSETS[onset % ONSETS.len()], ending)
}

fn town(i: usize) -> String {
    composed(
        i / PLACE_ENDINGS.len(),
        PLACE_ENDINGS[i % PLACE_ENDINGS.len()],
    )
}

fn address(rng: &mut SplitMix64, v: Vocabulary) -> (u32, String, usize, String) {
    let name = if v == Vocabulary::Dense || rng.unit() < 0.3 {
        pick(rng, STREETS).to_owned()
    } else {
        town(rng.below(ONSETS.len() * PLACE_ENDINGS.len()))
    };
    let street = format!("{name} {}", pick(rng, STREET_TYPES));
    let city = match v {
        Vocabulary::Dense => rng.below(CITIES.len()),
        Vocabulary::Population => rng.below(CITIES.len() + TOWNS),
    };
    let postcode = format!("{}", 2000 + city * 97 % 7919 + rng.below(5));
    (1 + rng.below(250) as u32, street, city, postcode)
}

fn city_name(city: usize) -> (String, &'static str) {
    match CITIES.get(city) {
        Some((name, state)) => ((*name).to_owned(), state),
        None => (town(city - CITIES.len()), CITIES[city % CITIES.len()].1),
    }
}

fn given_name(rng: &mut SplitMix64, sex: Sex, v: Vocabulary) -> String {
    let (head, endings) = if sex == Sex::Female {
        (FEMALE, FEMALE_ENDINGS)
    } else {
        (MALE, MALE_ENDINGS)
    };
    if v == Vocabulary::Dense || rng.unit() < 0.6 {
        pick(rng, head).to_owned()
    } else {
        composed(rng.below(ONSETS.len()), pick(rng, endings))
    }
}

fn family_name(rng: &mut SplitMix64, v: Vocabulary) -> String {
    if v == Vocabulary::Dense {
        return FAMILY[skewed(rng, FAMILY.len())].to_owned();
    }
    if rng.unit() < 0.3 {
        let x = rng.unit().powf(1.5);
        return FAMILY[(x * FAMILY.len() as f64) as usize % FAMILY.len()].to_owned();
    }
    let o = rng.below(ONSETS.len());
    let m = MIDDLES[rng.below(MIDDLES.len())];
    let e = FAMILY_ENDINGS[rng.below(FAMILY_ENDINGS.len())];
    format!("{}{m}{e}", ONSETS[o])
}

fn person(rng: &mut SplitMix64, v: Vocabulary) -> Person {
    let sex = if rng.below(2) == 0 {
        Sex::Female
    } else {
        Sex::Male
    };
    let given = given_name(rng, sex, v);
    let second = if rng.unit() < 0.2 {
        format!(" {}", given_name(rng, sex, v))
    } else {
        String::new()
    };
    let (number, street, city, postcode) = address(rng, v);
    Person {
        given: format!("{given}{second}"),
        family: family_name(rng, v),
        sex,
        year: 1925 + rng.below(98) as u16,
        month: 1 + rng.below(12) as u8,
        day: 1 + rng.below(28) as u8,
        number,
        street,
        city,
        postcode,
        phone: format!("04{}", digits(rng, 8)),
        national: digits(rng, 9),
    }
}

/// One keyboard-style error: substitution, deletion, insertion or
/// transposition of adjacent letters.
fn typo(rng: &mut SplitMix64, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 2 {
        return s.to_owned();
    }
    let i = rng.below(c.len() - 1);
    let letter = char::from(b'a' + rng.below(26) as u8);
    match rng.below(4) {
        0 => c[i + 1] = letter,
        1 => {
            c.remove(i + 1);
        }
        2 => c.insert(i + 1, letter),
        _ => c.swap(i, i + 1),
    }
    c.into_iter().collect()
}

fn chance(rng: &mut SplitMix64, p: f64) -> bool {
    rng.unit() < p
}

fn render(p: &Person, source: &str, id: &str, with_id: bool) -> Record {
    let mut r = Record::new(source, id);
    r.given_name = Some(PersonName::new(p.given.clone()));
    r.family_name = Some(PersonName::new(p.family.clone()));
    r.birth_date = Some(BirthDate::new(format!(
        "{:04}-{:02}-{:02}",
        p.year, p.month, p.day
    )));
    r.sex = Some(p.sex);
    r.address_line = Some(Address::new(format!("{} {}", p.number, p.street)));
    let (city, state) = city_name(p.city);
    r.city = Some(Address::new(city));
    r.state = Some(state.to_owned());
    r.postal_code = Some(Address::new(p.postcode.clone()));
    r.phone = Some(Phone::new(p.phone.clone()));
    if with_id {
        r.identifiers.push(Identifier {
            id: Mrn::new(p.national.clone()),
            authority: "NATIONAL".to_owned(),
            kind: "NI".to_owned(),
        });
    }
    r
}

fn noisy(rng: &mut SplitMix64, original: &Person, v: Vocabulary) -> (Person, Option<String>) {
    let mut p = original.clone();
    let mut partial_date = None;
    if chance(rng, 0.12) {
        let nick = NICK.iter().find(|(formal, _)| p.given.starts_with(formal));
        if let Some((_, aliases)) = nick {
            p.given = pick(rng, aliases).to_owned();
        }
    }
    if chance(rng, 0.15) {
        p.given = typo(rng, &p.given);
    }
    if chance(rng, 0.15) {
        p.family = typo(rng, &p.family);
    }
    if p.sex == Sex::Female && chance(rng, 0.04) {
        p.family = match v {
            Vocabulary::Dense => FAMILY[rng.below(FAMILY.len())].to_owned(),
            Vocabulary::Population => family_name(rng, v),
        };
    }
    if chance(rng, 0.03) {
        std::mem::swap(&mut p.given, &mut p.family);
    }
    let r = rng.unit();
    if r < 0.04 && p.day <= 12 {
        std::mem::swap(&mut p.day, &mut p.month);
    } else if r < 0.08 {
        p.day = (p.day % 28) + 1;
    } else if r < 0.10 {
        p.year += 1;
    } else if r < 0.13 {
        partial_date = Some(format!("{:04}", p.year));
    }
    if chance(rng, 0.15) {
        let (number, street, city, postcode) = address(rng, v);
        (p.number, p.street, p.city, p.postcode) = (number, street, city, postcode);
        if chance(rng, 0.5) {
            p.phone = format!("04{}", digits(rng, 8));
        }
    } else if chance(rng, 0.08) {
        p.street = typo(rng, &p.street);
    }
    if chance(rng, 0.05) {
        p.phone = format!("04{}", digits(rng, 8));
    }
    if chance(rng, 0.02) {
        p.national = typo(rng, &p.national);
    }
    (p, partial_date)
}

/// Generates labelled records, originals and duplicates interleaved in a
/// seeded random order.
pub fn generate(config: &SynthConfig) -> Vec<Labelled> {
    let mut rng = SplitMix64::new(config.seed);
    let mut out = vec![];
    for person_no in 0..config.people {
        let original = person(&mut rng, config.vocabulary);
        let mut copies = 0;
        while copies < 3 && chance(&mut rng, config.duplicate_rate) {
            copies += 1;
        }
        for copy in 0..=copies {
            let (p, partial) = if copy == 0 {
                (original.clone(), None)
            } else {
                noisy(&mut rng, &original, config.vocabulary)
            };
            let source = format!("h{}", 1 + (copy + person_no) % 4);
            let id = format!("{}{:07}", &source, person_no * 4 + copy);
            let mut r = render(&p, &source, &id, chance(&mut rng, config.national_id_rate));
            if let Some(d) = partial {
                r.birth_date = Some(BirthDate::new(d));
            }
            if copy > 0 {
                for field in 0..6 {
                    if chance(&mut rng, 0.04) {
                        match field {
                            0 => r.given_name = Some(PersonName::new("UNKNOWN")),
                            1 => r.birth_date = None,
                            2 => r.address_line = None,
                            3 => r.postal_code = None,
                            4 => r.phone = None,
                            _ => r.city = None,
                        }
                    }
                }
            }
            out.push(Labelled {
                record: r,
                person: person_no as u32,
            });
        }
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_labelled() {
        let config = SynthConfig {
            people: 200,
            ..SynthConfig::default()
        };
        let a = generate(&config);
        assert_eq!(a, generate(&config));
        assert!(a.len() > 250 && a.len() < 500, "{}", a.len());
        let people: std::collections::BTreeSet<u32> = a.iter().map(|l| l.person).collect();
        assert_eq!(people.len(), 200);
        let other = generate(&SynthConfig { seed: 7, ..config });
        assert_ne!(a, other);
    }

    /// Share of the commonest family name, and how many distinct ones.
    fn family_spread(v: Vocabulary) -> (f64, usize) {
        let data = generate(&SynthConfig {
            people: 20_000,
            vocabulary: v,
            ..SynthConfig::default()
        });
        let mut counts = std::collections::HashMap::new();
        for l in &data {
            let f = l.record.family_name.as_ref().map(|n| n.expose().to_owned());
            *counts.entry(f).or_insert(0usize) += 1;
        }
        let top = counts.values().max().copied().unwrap_or(0);
        (top as f64 / data.len() as f64, counts.len())
    }

    #[test]
    fn population_vocabulary_spreads_names_like_a_population() {
        let (dense_top, dense_names) = family_spread(Vocabulary::Dense);
        let (pop_top, pop_names) = family_spread(Vocabulary::Population);
        assert!(dense_top > 0.15, "{dense_top}");
        assert!(pop_top < 0.02, "{pop_top}");
        assert!(pop_names > 5 * dense_names, "{pop_names} vs {dense_names}");
        let towns: std::collections::BTreeSet<String> = generate(&SynthConfig {
            people: 20_000,
            vocabulary: Vocabulary::Population,
            ..SynthConfig::default()
        })
        .iter()
        .filter_map(|l| l.record.postal_code.as_ref().map(|c| c.expose().to_owned()))
        .collect();
        assert!(towns.len() > 1_000, "{}", towns.len());
    }
}
