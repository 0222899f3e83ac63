//! What the process reads about itself: memory, bytes written, CPU time; and percentiles.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};

pub struct Status {
    pub vm_hwm_kib: u64,
    pub vm_rss_kib: u64,
}

/// VmHWM (peak resident set) and VmRSS of this process.
pub fn proc_status() -> Status {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Status {
        vm_hwm_kib: field("VmHWM:"),
        vm_rss_kib: field("VmRSS:"),
    }
}

/// Bytes this process caused to be written to storage, and of those cancelled (pages dirtied,
/// then truncated or deleted before writeback), from /proc/self/io.
pub fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("cancelled_write_bytes:"))
}

/// User + system CPU time of this process (all threads).
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: filled above.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// File length and allocated bytes of everything under `path`, and the number of files.
pub fn disk_usage(path: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut alloc, mut files) = (0, 0, 0);
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).expect("read_dir") {
            let e = e.expect("dir entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() {
                stack.push(e.path());
            } else {
                len += m.len();
                alloc += m.blocks() * 512;
                files += 1;
            }
        }
    }
    (len, alloc, files)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Mean and percentiles of latencies in milliseconds.
pub fn latency_summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    json!({
        "n": v.len(),
        "ms_mean": mean,
        "ms_p50": quantile(&v, 0.50),
        "ms_p95": quantile(&v, 0.95),
        "ms_p99": quantile(&v, 0.99),
        "ms_max": v.last().copied().unwrap_or(f64::NAN),
    })
}

/// What a write loop measured.
pub struct WriteRun {
    pub latencies_ms: Vec<f64>,
    pub wall: Duration,
    pub cpu: Duration,
    pub write_bytes: u64,
    pub cancelled_bytes: u64,
    pub final_merge: Option<Duration>,
}

impl WriteRun {
    pub fn json(self) -> Value {
        let n = self.latencies_ms.len().max(1) as f64;
        let mut v = latency_summary(self.latencies_ms);
        let o = v.as_object_mut().expect("object");
        o.insert("seconds".into(), json!(self.wall.as_secs_f64()));
        o.insert("cpu_ms_per_message".into(), json!(ms(self.cpu) / n));
        o.insert("write_bytes".into(), json!(self.write_bytes));
        o.insert(
            "write_bytes_per_message".into(),
            json!(self.write_bytes as f64 / n),
        );
        o.insert(
            "net_write_bytes_per_message".into(),
            json!(self.write_bytes.saturating_sub(self.cancelled_bytes) as f64 / n),
        );
        o.insert(
            "final_merge_seconds".into(),
            json!(self.final_merge.map(|d| d.as_secs_f64())),
        );
        v
    }
}

pub fn disk_json(path: &Path, messages: usize) -> Value {
    let (len, alloc, files) = disk_usage(path);
    json!({
        "bytes": len,
        "allocated_bytes": alloc,
        "bytes_per_message": len as f64 / messages.max(1) as f64,
        "files": files,
    })
}

/// Query latencies by class: all, one room, all rooms, frequent, rare, and by word count.
pub fn query_json(results: &[(crate::Query, f64, usize)]) -> Value {
    let pick = |f: &dyn Fn(&crate::Query) -> bool| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(q, _, _)| f(q))
            .map(|r| r.1)
            .collect();
        latency_summary(v)
    };
    json!({
        "all": pick(&|_| true),
        "one_room": pick(&|q| q.room.is_some()),
        "all_rooms": pick(&|q| q.room.is_none()),
        "frequent": pick(&|q| q.frequent),
        "rare": pick(&|q| !q.frequent),
        "words1": pick(&|q| q.words == 1),
        "words2": pick(&|q| q.words == 2),
        "words3": pick(&|q| q.words == 3),
        "hits": results.iter().map(|r| r.2).collect::<Vec<_>>(),
    })
}
