//! Statistics, process and disk probes, the printed summary and the side-by-side table.

use std::{fs, path::Path};

use serde_json::{Value, json};

/// count, mean, p50, p95, p99, max of millisecond samples (nearest-rank percentiles).
pub fn dist(samples: &mut [f64]) -> Value {
    if samples.is_empty() {
        return json!({ "count": 0 });
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let pick = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = samples.iter().sum::<f64>() / n as f64;
    json!({
        "count": n,
        "mean": round3(mean),
        "p50": round3(pick(0.50)),
        "p95": round3(pick(0.95)),
        "p99": round3(pick(0.99)),
        "max": round3(samples[n - 1]),
    })
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Memory of a process in KiB, from /proc/PID/status.
#[derive(Clone, Copy, Debug)]
pub struct ProcMem {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the highest VmRSS so far.
    pub hwm: u64,
    /// RssAnon: heap, stacks, dirty private pages; what the kernel can only swap.
    pub anon: u64,
    /// RssFile: pages of mapped files (the executable, libraries), which the kernel can drop
    /// and read again under memory pressure.
    pub file: u64,
}

pub fn proc_mem(pid: u32) -> Option<ProcMem> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcMem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

/// CPU time (user + system) of a process in seconds, from /proc/PID/stat (USER_HZ = 100).
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Sum of the sizes of all files under `dir` (recursive, symlinks not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
    }
    total
}

pub fn mib(kib_or_bytes: f64, is_kib: bool) -> String {
    let m = if is_kib {
        kib_or_bytes / 1024.0
    } else {
        kib_or_bytes / 1024.0 / 1024.0
    };
    format!("{m:.1} MiB")
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_f64()
}

/// The readable summary of one result.
pub fn summary(r: &Value) -> String {
    let mut o = String::new();
    let g = |p: &[&str]| num(r, p);
    let fmt = |x: Option<f64>, unit: &str| match x {
        Some(x) if x >= 100.0 => format!("{x:.0} {unit}"),
        Some(x) => format!("{x:.2} {unit}"),
        None => "n/a".into(),
    };
    let d = |name: &str, p: &[&str]| {
        let base: Vec<&str> = p.to_vec();
        let q = |k: &str| {
            let mut pp = base.clone();
            pp.push(k);
            num(r, &pp)
        };
        format!(
            "  {name:<28} p50 {}  p95 {}  p99 {}  max {}  (n={})\n",
            fmt(q("p50"), "ms"),
            fmt(q("p95"), "ms"),
            fmt(q("p99"), "ms"),
            fmt(q("max"), "ms"),
            q("count").unwrap_or(0.0)
        )
    };
    o += &format!(
        "== {} ({}) run {} — {} ==\n",
        r["label"].as_str().unwrap_or("?"),
        r["url"].as_str().unwrap_or("?"),
        r["run_id"].as_str().unwrap_or("?"),
        r["status"].as_str().unwrap_or("?")
    );
    let c = &r["config"];
    o += &format!(
        "  users {} rooms {} {} concurrency {}\n",
        c["users"],
        c["rooms"],
        c["soak_secs"]
            .as_u64()
            .map(|s| format!("soak {s} s"))
            .unwrap_or_else(|| format!("messages {}", c["messages"])),
        c["concurrency"],
    );
    if r["complete"] == false {
        o += &format!(
            "  INCOMPLETE: sending stopped early ({} of {} messages sent)\n",
            r["send"]["count"], c["messages"]
        );
    }
    if let Some(ms) = g(&["startup_ms"]) {
        o += &format!("  start to first /versions     {ms:.1} ms\n");
    }
    o += &format!(
        "  setup: register {} users {}, create rooms {}, joins {}\n",
        c["users"],
        fmt(g(&["setup", "register_s"]), "s"),
        fmt(g(&["setup", "create_rooms_s"]), "s"),
        fmt(g(&["setup", "join_s"]), "s"),
    );
    o += &format!(
        "  send throughput              {} (sent {} ok {} failed {} in {}); delivered {}\n",
        fmt(g(&["send", "throughput_eps"]), "events/s"),
        r["send"]["count"],
        r["send"]["ok"],
        r["send"]["failed"],
        fmt(g(&["send", "duration_s"]), "s"),
        fmt(g(&["delivery", "throughput_eps"]), "events/s"),
    );
    o += &d("send latency", &["send", "latency_ms"]);
    o += &d("send->sync delivery", &["delivery", "latency_ms"]);
    o += &d("at rest: send", &["quiet", "send_ms"]);
    o += &d("at rest: send->sync", &["quiet", "sync_ms"]);
    o += &d("back to back: send", &["quiet", "hot_send_ms"]);
    o += &d("back to back: send->sync", &["quiet", "hot_sync_ms"]);
    o += &format!(
        "  correctness                  received {} lost {} duplicated {} reordered {} unexpected {} wrong-id {} (gaps filled {}, 429 retries {})\n",
        r["correctness"]["received"],
        r["correctness"]["lost"],
        r["correctness"]["duplicates"],
        r["correctness"]["reordered"],
        r["correctness"]["unexpected"],
        r["correctness"]["wrong_event_id"],
        r["delivery"]["limited_gaps"],
        r["send"]["rate_limited_retries"],
    );
    if r["initial_sync"].is_object() {
        o += &format!(
            "  initial sync (user in {} rooms) {} ({} bytes)\n",
            r["initial_sync"]["rooms"],
            fmt(g(&["initial_sync", "ms"]), "ms"),
            r["initial_sync"]["bytes"],
        );
    }
    if r["initial_sync"]["warm_ms"].is_object() {
        o += &d("initial sync, fresh devices", &["initial_sync", "warm_ms"]);
    }
    for key in ["first_20_rooms", "all_rooms"] {
        if r["sliding_sync"][key].is_object() {
            o += &d(
                &format!("sliding sync, {} rooms", r["sliding_sync"][key]["rooms"]),
                &["sliding_sync", key, "ms"],
            );
        }
    }
    if g(&["incremental_sync_ms", "count"]).unwrap_or(0.0) > 0.0 {
        o += &d("incremental no-op sync", &["incremental_sync_ms"]);
    }
    if r["pagination"].is_object() {
        o += &format!(
            "  /messages walk               {} events in {} pages, {} = {}\n",
            r["pagination"]["events"],
            r["pagination"]["pages"],
            fmt(g(&["pagination", "total_ms"]), "ms"),
            fmt(g(&["pagination", "events_per_s"]), "events/s"),
        );
    }
    if r["cpu"].is_object() {
        o += &format!(
            "  CPU during load              server {} ({} per message), benchmark client {}, over {} wall\n",
            fmt(g(&["cpu", "server_s"]), "s"),
            fmt(g(&["cpu", "server_ms_per_message"]), "ms"),
            fmt(g(&["cpu", "client_s"]), "s"),
            fmt(g(&["cpu", "wall_s"]), "s"),
        );
    }
    if r["memory"].is_object() {
        let kib = |p: &str| {
            g(&["memory", p])
                .map(|x| mib(x, true))
                .unwrap_or_else(|| "n/a".into())
        };
        o += &format!(
            "  server RSS                   at start {}, before load {}, peak sampled {}, VmHWM {}, idle after {} s {} ({} anonymous, {} file-backed)\n",
            kib("rss_at_start_kib"),
            kib("rss_before_load_kib"),
            kib("peak_rss_kib"),
            kib("vmhwm_kib"),
            r["memory"]["idle_after_s"],
            kib("idle_rss_kib"),
            kib("idle_rss_anon_kib"),
            kib("idle_rss_file_kib"),
        );
    }
    if r["disk"].is_object() {
        let b = |p: &str| {
            g(&["disk", p])
                .map(|x| mib(x, false))
                .unwrap_or_else(|| "n/a".into())
        };
        o += &format!(
            "  data dir                     before load {}, after load {}, at end {}; {} bytes/message (growth during load {} bytes/message)\n",
            b("bytes_before_load"),
            b("bytes_after_load"),
            b("bytes_at_end"),
            fmt(g(&["disk", "bytes_per_message"]), "").trim_end(),
            fmt(g(&["disk", "growth_bytes_per_message"]), "").trim_end(),
        );
    }
    if let Some(p) = r["problems"].as_array()
        && !p.is_empty()
    {
        o += &format!("  PROBLEMS ({}):\n", r["problem_count"]);
        for x in p {
            o += &format!("    - {}\n", x.as_str().unwrap_or_default());
        }
    }
    o
}

/// A markdown table of results side by side; with two results a ratio column says how many
/// times better the first (Tsunagu) is than the second (Synapse) on each row.
pub fn table(results: &[Value]) -> String {
    // (row name, path, unit, higher is better, is KiB/bytes → MiB)
    #[derive(Clone, Copy)]
    enum U {
        Ms,
        Eps,
        Kib,
        Bytes,
        Plain,
        Count,
    }
    let rows: &[(&str, &[&str], U, bool)] = &[
        (
            "start to first /versions, fresh data dir (ms)",
            &["startup_ms"],
            U::Ms,
            false,
        ),
        (
            "restart on the run's data to first /versions (ms)",
            &["restart_ms"],
            U::Ms,
            false,
        ),
        ("messages acknowledged", &["send", "ok"], U::Count, true),
        (
            "register users (s)",
            &["setup", "register_s"],
            U::Plain,
            false,
        ),
        (
            "send throughput (events/s)",
            &["send", "throughput_eps"],
            U::Eps,
            true,
        ),
        (
            "delivered throughput (events/s)",
            &["delivery", "throughput_eps"],
            U::Eps,
            true,
        ),
        (
            "send latency p50 (ms)",
            &["send", "latency_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "send latency p95 (ms)",
            &["send", "latency_ms", "p95"],
            U::Ms,
            false,
        ),
        (
            "send latency p99 (ms)",
            &["send", "latency_ms", "p99"],
            U::Ms,
            false,
        ),
        (
            "send→sync p50 (ms)",
            &["delivery", "latency_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "send→sync p95 (ms)",
            &["delivery", "latency_ms", "p95"],
            U::Ms,
            false,
        ),
        (
            "send→sync p99 (ms)",
            &["delivery", "latency_ms", "p99"],
            U::Ms,
            false,
        ),
        (
            "at rest: send latency p50 (ms)",
            &["quiet", "send_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "at rest: send→sync p50 (ms)",
            &["quiet", "sync_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "at rest: send→sync p95 (ms)",
            &["quiet", "sync_ms", "p95"],
            U::Ms,
            false,
        ),
        (
            "back to back: send→sync p50 (ms)",
            &["quiet", "hot_sync_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "initial sync, user in all rooms (ms)",
            &["initial_sync", "ms"],
            U::Ms,
            false,
        ),
        (
            "initial sync, fresh devices p50 (ms)",
            &["initial_sync", "warm_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "sliding sync first response, 20 rooms, p50 (ms)",
            &["sliding_sync", "first_20_rooms", "ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "sliding sync first response, all rooms, p50 (ms)",
            &["sliding_sync", "all_rooms", "ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "incremental no-op sync p50 (ms)",
            &["incremental_sync_ms", "p50"],
            U::Ms,
            false,
        ),
        (
            "/messages full walk (ms)",
            &["pagination", "total_ms"],
            U::Ms,
            false,
        ),
        (
            "/messages walk (events/s)",
            &["pagination", "events_per_s"],
            U::Eps,
            true,
        ),
        (
            "server CPU time per message during load (ms)",
            &["cpu", "server_ms_per_message"],
            U::Ms,
            false,
        ),
        (
            "RSS fresh after start (MiB)",
            &["memory", "rss_at_start_kib"],
            U::Kib,
            false,
        ),
        (
            "peak RSS during load, 100 ms samples (MiB)",
            &["memory", "peak_rss_kib"],
            U::Kib,
            false,
        ),
        (
            "VmHWM, whole run (MiB)",
            &["memory", "vmhwm_kib"],
            U::Kib,
            false,
        ),
        (
            "RSS idle at end (MiB)",
            &["memory", "idle_rss_kib"],
            U::Kib,
            false,
        ),
        (
            "… of which anonymous: heap, stacks (MiB)",
            &["memory", "idle_rss_anon_kib"],
            U::Kib,
            false,
        ),
        (
            "… of which file-backed: executable pages (MiB)",
            &["memory", "idle_rss_file_kib"],
            U::Kib,
            false,
        ),
        (
            "data dir at end (MiB)",
            &["disk", "bytes_at_end"],
            U::Bytes,
            false,
        ),
        (
            "data dir bytes / message",
            &["disk", "bytes_per_message"],
            U::Plain,
            false,
        ),
        (
            "data dir growth / message (bytes)",
            &["disk", "growth_bytes_per_message"],
            U::Plain,
            false,
        ),
    ];
    let show = |x: f64, u: U| -> String {
        let x = match u {
            U::Kib => x / 1024.0,
            U::Bytes => x / 1024.0 / 1024.0,
            _ => x,
        };
        if x >= 1000.0 || matches!(u, U::Eps | U::Count) {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    };
    let mut o = String::new();
    o += "| metric |";
    for r in results {
        o += &format!(" {} |", r["label"].as_str().unwrap_or("?"));
    }
    if results.len() == 2 {
        o += " Tsunagu advantage |";
    }
    o += "\n|---|";
    for _ in results {
        o += "---:|";
    }
    if results.len() == 2 {
        o += "---:|";
    }
    o += "\n";
    let status_row: Vec<String> = results
        .iter()
        .map(|r| {
            let st = r["status"].as_str().unwrap_or("?");
            if r["complete"] == false {
                format!("{st}, incomplete")
            } else {
                st.to_owned()
            }
        })
        .collect();
    o += &format!("| run status | {} |", status_row.join(" | "));
    if results.len() == 2 {
        o += " |";
    }
    o += "\n";
    for (name, path, unit, higher_better) in rows {
        let vals: Vec<Option<f64>> = results.iter().map(|r| num(r, path)).collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        o += &format!("| {name} |");
        for v in &vals {
            o += &format!(
                " {} |",
                v.map(|x| show(x, *unit)).unwrap_or_else(|| "–".into())
            );
        }
        if results.len() == 2 {
            let ratio = match (vals[0], vals[1]) {
                _ if matches!(unit, U::Count) => String::new(),
                (Some(a), Some(b)) if a > 0.0 && b > 0.0 => {
                    let f = if *higher_better { a / b } else { b / a };
                    if f >= 10.0 {
                        format!("{f:.0}×")
                    } else {
                        format!("{f:.2}×")
                    }
                }
                _ => "–".into(),
            };
            o += &format!(" {ratio} |");
        }
        o += "\n";
    }
    o
}
