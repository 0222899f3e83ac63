//! A deterministic chat corpus: English with a Zipf-like word distribution, about one message
//! in ten in Japanese (kana and kanji, no spaces), spread uniformly over the rooms.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Common English words, most frequent first; the rest of the vocabulary is made of syllables.
const COMMON: &str = "the i to you a and it is that of in for we on be this have my it's \
    with just so not but can are at me do if was what no yes will i'm all get like know about \
    up out there they your one from time think good now how don't when he she would as well \
    some more then see go here an or has had by today tomorrow new people work let's thanks \
    could meeting need also right want going really much make which any back did sure still \
    only way other after first their them who our over because day been into look than were \
    should last week said something where next why take before thing its try around again \
    never same those year since maybe these okay hi hello morning night help issue fix build \
    server room message photo link plan lunch coffee event park train bus station weekend \
    problem question answer update release version test code bug report change idea team call \
    later soon great nice cool awesome sorry please home office garden school book music game \
    picture video phone email chat group friend family city street market shop price money \
    water food dinner breakfast kids dog cat weather rain snow sun cold warm hot open close \
    start stop finish early late small big long short old young best better worse easy hard";

/// Kana and common kanji the Japanese words are made of.
const KANA: &str = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽっゃゅょアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワンガギグゲゴザジズゼゾダデドバビブベボパピプペポー";
const KANJI: &str = "日本人今年月時間会議明朝昼夜電話駅前後上下中大小新古高安学校先生友達家族水食飯茶店道車電気天雨雪晴仕事休来行見聞話読書買売作使思知出入言手足目口心国語名前場所子供犬猫春夏秋冬週末何";
const PARTICLES: &[&str] = &[
    "は", "が", "を", "に", "で", "の", "と", "も", "から", "まで", "です", "ます", "ね", "よ",
];

/// One message.
pub struct Message {
    pub room: usize,
    pub sender: usize,
    pub event_id: String,
    pub text: String,
    pub japanese: bool,
}

/// One search.
#[derive(Clone)]
pub struct Query {
    pub text: String,
    /// One room, or all rooms.
    pub room: Option<usize>,
    pub frequent: bool,
    pub words: usize,
}

/// A two-character search taken from a Japanese message, which it should find.
pub struct JapaneseQuery {
    pub text: String,
    pub room: usize,
    pub message: usize,
}

pub struct Corpus {
    pub rooms: Vec<String>,
    pub messages: Vec<Message>,
    pub vocab: Vec<String>,
    rng: ChaCha8Rng,
}

/// Cumulative weights of a Zipf distribution over `n` ranks with exponent `s`.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut out = Vec::with_capacity(n);
    for r in 1..=n {
        acc += 1.0 / (r as f64).powf(s);
        out.push(acc);
    }
    out
}

fn sample(cdf: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let x = rng.r#gen::<f64>() * cdf.last().copied().unwrap_or(1.0);
    cdf.partition_point(|&c| c < x).min(cdf.len() - 1)
}

fn random_id(rng: &mut ChaCha8Rng, len: usize) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| B64[rng.gen_range(0..64)] as char)
        .collect()
}

/// The English vocabulary: the common words, then made-up words of 2–4 syllables.
fn english_vocab(rng: &mut ChaCha8Rng, size: usize) -> Vec<String> {
    const ONSETS: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
        "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "sl", "st", "th", "tr",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou"];
    const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "ck", "nd", "st", "ng"];
    let mut vocab: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for w in COMMON.split_whitespace() {
        if seen.insert(w.to_owned()) {
            vocab.push(w.to_owned());
        }
    }
    while vocab.len() < size {
        let syllables = rng.gen_range(2..=4);
        let mut w = String::new();
        for _ in 0..syllables {
            w += ONSETS[rng.gen_range(0..ONSETS.len())];
            w += VOWELS[rng.gen_range(0..VOWELS.len())];
            w += CODAS[rng.gen_range(0..CODAS.len())];
        }
        if seen.insert(w.clone()) {
            vocab.push(w);
        }
    }
    vocab
}

fn japanese_vocab(rng: &mut ChaCha8Rng, size: usize) -> Vec<String> {
    let kana: Vec<char> = KANA.chars().collect();
    let kanji: Vec<char> = KANJI.chars().collect();
    let mut vocab: Vec<String> = PARTICLES.iter().map(|s| s.to_string()).collect();
    let mut seen: std::collections::HashSet<String> = vocab.iter().cloned().collect();
    while vocab.len() < size {
        let mut w = String::new();
        match rng.gen_range(0..3) {
            // Kanji compound, with or without kana ending.
            0 | 1 => {
                for _ in 0..rng.gen_range(1..=2) {
                    w.push(kanji[rng.gen_range(0..kanji.len())]);
                }
                for _ in 0..rng.gen_range(0..=2) {
                    w.push(kana[rng.gen_range(0..46)]);
                }
            }
            // Katakana or hiragana word.
            _ => {
                let katakana = kana.iter().position(|&c| c == 'ア').unwrap_or(0);
                let base = if rng.gen_bool(0.5) { 0 } else { katakana };
                for _ in 0..rng.gen_range(2..=4) {
                    w.push(kana[(base + rng.gen_range(0..46)).min(kana.len() - 1)]);
                }
            }
        }
        if seen.insert(w.clone()) {
            vocab.push(w);
        }
    }
    vocab
}

impl Corpus {
    pub fn generate(seed: u64, messages: usize, rooms: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vocab = english_vocab(&mut rng, 3000);
        let jvocab = japanese_vocab(&mut rng, 800);
        let cdf = zipf_cdf(vocab.len(), 1.0);
        let jcdf = zipf_cdf(jvocab.len(), 1.0);
        let room_ids: Vec<String> = (0..rooms)
            .map(|_| {
                let local: String = (0..18)
                    .map(|_| (b'a' + rng.gen_range(0..26u8)) as char)
                    .collect();
                format!("!{local}:example.org")
            })
            .collect();
        let mut out = Vec::with_capacity(messages);
        for _ in 0..messages {
            let room = rng.gen_range(0..rooms);
            let sender = rng.gen_range(0..1000);
            let event_id = format!("${}", random_id(&mut rng, 43));
            let japanese = rng.gen_bool(0.10);
            let mut text = String::new();
            if japanese {
                let n = rng.gen_range(3..=15);
                for i in 0..n {
                    text += &jvocab[sample(&jcdf, &mut rng)];
                    if i + 1 < n && rng.gen_bool(0.08) {
                        text.push('、');
                    }
                }
                text.push(['。', '！', '？', '。'][rng.gen_range(0..4)]);
            } else {
                let n = rng.gen_range(3..=25);
                for i in 0..n {
                    let w = &vocab[sample(&cdf, &mut rng)];
                    if i == 0 {
                        let mut c = w.chars();
                        if let Some(f) = c.next() {
                            text.extend(f.to_uppercase());
                            text.push_str(c.as_str());
                        }
                    } else {
                        text.push(' ');
                        text += w;
                    }
                    if i + 1 < n && rng.gen_bool(0.06) {
                        text.push(',');
                    }
                }
                text.push_str([".", "!", "?", "", ""][rng.gen_range(0..5)]);
            }
            out.push(Message {
                room,
                sender,
                event_id,
                text,
                japanese,
            });
        }
        Self {
            rooms: room_ids,
            messages: out,
            vocab,
            rng,
        }
    }

    /// 300 searches: one room or all rooms × frequent or rare words × 1, 2 or 3 words; 25 of
    /// each. Frequent words are ranks 1–100 of the vocabulary, rare ones ranks 1,001–3,000.
    pub fn queries(&self) -> Vec<Query> {
        let mut rng = self.rng.clone();
        let mut out = Vec::new();
        for one_room in [true, false] {
            for frequent in [true, false] {
                for words in 1..=3 {
                    for _ in 0..25 {
                        let text: Vec<&str> = (0..words)
                            .map(|_| {
                                let r = if frequent {
                                    rng.gen_range(0..100)
                                } else {
                                    rng.gen_range(1000..3000)
                                };
                                self.vocab[r].as_str()
                            })
                            .collect();
                        out.push(Query {
                            text: text.join(" "),
                            room: one_room.then(|| rng.gen_range(0..self.rooms.len())),
                            frequent,
                            words,
                        });
                    }
                }
            }
        }
        out
    }

    /// 20 two-character searches, each cut from a Japanese message among the first `n`.
    pub fn japanese_queries(&self, n: usize) -> Vec<JapaneseQuery> {
        let mut rng = self.rng.clone();
        rng.set_stream(7);
        let mut out = Vec::new();
        while out.len() < 20 {
            let i = rng.gen_range(0..n);
            let m = &self.messages[i];
            if !m.japanese {
                continue;
            }
            let chars: Vec<char> = m.text.chars().collect();
            let j = rng.gen_range(0..chars.len().saturating_sub(2).max(1));
            let pair: String = chars[j..(j + 2).min(chars.len())].iter().collect();
            if pair.chars().count() < 2 || pair.chars().any(|c| !c.is_alphanumeric()) {
                continue;
            }
            out.push(JapaneseQuery {
                text: pair,
                room: m.room,
                message: i,
            });
        }
        out
    }

    pub fn stats(&self, n: usize) -> Value {
        let msgs = &self.messages[..n];
        let japanese = msgs.iter().filter(|m| m.japanese).count();
        let text_bytes: usize = msgs.iter().map(|m| m.text.len()).sum();
        let postings: usize = msgs
            .iter()
            .map(|m| tsunagu::service::timeline::search_index::words(&m.text).len())
            .sum();
        json!({
            "rooms": self.rooms.len(),
            "japanese_messages": japanese,
            "mean_text_bytes": text_bytes as f64 / n as f64,
            "postings": postings,
            "mean_postings_per_message": postings as f64 / n as f64,
            "vocabulary": self.vocab.len(),
        })
    }
}
