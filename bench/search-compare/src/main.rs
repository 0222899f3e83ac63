//! Tsunagu's full-text index (postings in the store, written in the event's batch) against
//! tantivy, on one deterministic chat corpus.
//!
//! Every side runs in its own process, so that its peak memory (VmHWM) and its bytes written
//! (/proc/self/io) are its own:
//!
//! ```sh
//! search-compare all                 # runs every side below as a child and prints a table
//! search-compare store-index         # SEARCH postings only, one durable commit per message
//! search-compare store-events        # the event record only (baseline), same commits
//! search-compare store-both          # event record + SEARCH postings in one batch
//! search-compare tantivy-each        # tantivy, commit after every message
//! search-compare tantivy-1000        # tantivy, commit every 1,000 messages
//! ```
//!
//! Options: `--messages N` (index the first N messages of the corpus; default 100,000),
//! `--each-messages N` (for `all`: messages of the per-message tantivy run and of the store run
//! beside it; default 10,000), `--dir PATH` (where the data directory is made, default the
//! temp dir; it is removed afterwards).

mod corpus;
mod measure;
mod store_side;
#[cfg(feature = "tantivy")]
mod tantivy_side;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

pub use corpus::{Corpus, Query};
pub use measure::*;

/// Messages of the corpus.
const MESSAGES: usize = 100_000;
/// Rooms of the corpus.
const ROOMS: usize = 200;
/// Seed of the corpus.
const SEED: u64 = 0x7453_756e_6167_75;

struct Args {
    side: String,
    messages: Option<usize>,
    dir: PathBuf,
    each_messages: usize,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        side: it.next().unwrap_or_else(|| "all".into()),
        messages: None,
        dir: std::env::temp_dir(),
        each_messages: 10_000,
    };
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--messages" => args.messages = Some(val().parse().expect("--messages N")),
            "--each-messages" => args.each_messages = val().parse().expect("--each-messages N"),
            "--dir" => args.dir = PathBuf::from(val()),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    if args.side == "all" {
        run_all(&args);
        return;
    }
    let corpus = Corpus::generate(SEED, MESSAGES, ROOMS);
    let n = args.messages.unwrap_or(MESSAGES).min(MESSAGES);
    let after_corpus = proc_status();
    let data = args.dir.join(format!(
        "search-compare-{}-{}",
        args.side,
        std::process::id()
    ));
    std::fs::create_dir_all(&data).expect("data dir");
    let mut out = match args.side.as_str() {
        "store-index" => store_side::run(&corpus, n, &data, false, true),
        "store-events" => store_side::run(&corpus, n, &data, true, false),
        "store-both" => store_side::run(&corpus, n, &data, true, true),
        #[cfg(feature = "tantivy")]
        "tantivy-each" => tantivy_side::run(&corpus, n, &data, 1),
        #[cfg(feature = "tantivy")]
        "tantivy-1000" => tantivy_side::run(&corpus, n, &data, 1000),
        other => panic!("unknown side {other}"),
    };
    let end = proc_status();
    let o = out.as_object_mut().expect("object");
    o.insert("side".into(), json!(args.side));
    o.insert("messages".into(), json!(n));
    o.insert("corpus".into(), corpus.stats(n));
    o.insert(
        "vm_hwm_after_corpus_kib".into(),
        json!(after_corpus.vm_hwm_kib),
    );
    o.insert("vm_hwm_kib".into(), json!(end.vm_hwm_kib));
    o.insert("vm_rss_end_kib".into(), json!(end.vm_rss_kib));
    std::fs::remove_dir_all(&data).expect("remove data dir");
    println!("{}", serde_json::to_string(&out).expect("json"));
}

/// Runs each side in its own process and prints the results.
fn run_all(args: &Args) {
    let exe = std::env::current_exe().expect("own path");
    let n = args.messages.unwrap_or(MESSAGES);
    let mut runs: Vec<(&str, usize)> = vec![
        ("store-index", n),
        ("store-events", n),
        ("store-both", n),
        ("tantivy-1000", n),
        ("store-index", args.each_messages),
        ("tantivy-each", args.each_messages),
    ];
    if !cfg!(feature = "tantivy") {
        runs.retain(|(s, _)| !s.starts_with("tantivy"));
    }
    let mut results = Vec::new();
    for (side, n) in runs {
        eprintln!("running {side} on {n} messages");
        let out = run_child(&exe, side, n, &args.dir);
        eprintln!("{out}");
        results.push(out);
    }
    println!("{}", serde_json::to_string_pretty(&results).expect("json"));
    println!();
    print!("{}", markdown(&results));
}

fn run_child(exe: &Path, side: &str, n: usize, dir: &Path) -> Value {
    let output = Command::new(exe)
        .arg(side)
        .arg("--messages")
        .arg(n.to_string())
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run child");
    if !output.status.success() {
        panic!("{side} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).expect("child json")
}

fn markdown(results: &[Value]) -> String {
    let f = |v: &Value, path: &str| -> String {
        let mut cur = v;
        for p in path.split('.') {
            cur = &cur[p];
        }
        match cur {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else if x.abs() >= 100.0 {
                    format!("{x:.0}")
                } else if x.abs() >= 10.0 {
                    format!("{x:.1}")
                } else {
                    format!("{x:.3}")
                }
            }
            Value::Null => "–".into(),
            other => other.to_string(),
        }
    };
    let rows: &[(&str, &str)] = &[
        ("messages indexed", "messages"),
        ("write: time per message, mean (ms)", "write.ms_mean"),
        ("write: time per message, p50 (ms)", "write.ms_p50"),
        ("write: time per message, p95 (ms)", "write.ms_p95"),
        ("write: time per message, p99 (ms)", "write.ms_p99"),
        ("write: time per message, max (ms)", "write.ms_max"),
        ("write: CPU per message (ms)", "write.cpu_ms_per_message"),
        ("write: wall time, total (s)", "write.seconds"),
        (
            "written to disk / message (bytes)",
            "write.write_bytes_per_message",
        ),
        (
            "  … less cancelled (bytes)",
            "write.net_write_bytes_per_message",
        ),
        ("final wait for merges (s)", "write.final_merge_seconds"),
        ("on disk at end (bytes, file length)", "disk.bytes"),
        ("on disk at end (bytes, allocated)", "disk.allocated_bytes"),
        ("on disk / message (bytes)", "disk.bytes_per_message"),
        ("files at end", "disk.files"),
        ("query p50, 1 room (ms)", "query.one_room.ms_p50"),
        ("query p95, 1 room (ms)", "query.one_room.ms_p95"),
        ("query p50, 200 rooms (ms)", "query.all_rooms.ms_p50"),
        ("query p95, 200 rooms (ms)", "query.all_rooms.ms_p95"),
        ("query p50, frequent words (ms)", "query.frequent.ms_p50"),
        ("query p50, rare words (ms)", "query.rare.ms_p50"),
        (
            "Japanese 2-char queries finding their message",
            "japanese.found",
        ),
        (
            "VmHWM after corpus generation (KiB)",
            "vm_hwm_after_corpus_kib",
        ),
        ("VmHWM at end (KiB)", "vm_hwm_kib"),
    ];
    let mut s = String::from("| metric |");
    for r in results {
        s += &format!(" {} ({}) |", f(r, "side"), f(r, "messages"));
    }
    s += "\n|---|";
    for _ in results {
        s += "---:|";
    }
    s += "\n";
    for (label, path) in rows {
        s += &format!("| {label} |");
        for r in results {
            s += &format!(" {} |", f(r, path).trim_matches('"'));
        }
        s += "\n";
    }
    s
}
