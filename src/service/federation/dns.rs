//! SRV records for server discovery (`_matrix-fed._tcp.<name>`, and the deprecated
//! `_matrix._tcp.<name>`): one question over UDP to one resolver, the answer read with the
//! usual bounds (message size, name length, compression jumps). Nothing else of DNS is needed
//! here: addresses are resolved by the system.

use std::{net::SocketAddr, time::Duration};

/// A server's SRV record: where its federation API is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The largest DNS answer read (EDNS-free answers are at most 512 bytes; some resolvers send
/// more over UDP).
const MAX_ANSWER: usize = 4096;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// The resolver named by the first `nameserver` line of /etc/resolv.conf, on port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// The SRV records of `name`, best first (lowest priority, then highest weight). Empty when
/// the name has none; an error when the resolver could not be asked or answered nonsense.
pub async fn lookup_srv(
    resolver: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Srv>, String> {
    let id: u16 = rand::random();
    let query = question(id, name)?;
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    socket.connect(resolver).await.map_err(|e| e.to_string())?;
    socket.send(&query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| format!("{resolver} did not answer for {name}"))?
            .map_err(|e| e.to_string())?;
        // Another answer (a late one to an earlier question) is not ours: wait on.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            let mut records = parse_answer(&buf[..n])?;
            records.sort_by_key(|r| (r.priority, std::cmp::Reverse(r.weight)));
            return Ok(records);
        }
    }
}

/// A query for the SRV records of `name` (recursion desired).
fn question(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name} is not a domain name"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 12 + 255 + 1 {
        return Err(format!("{name} is too long"));
    }
    out.extend_from_slice(&TYPE_SRV.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// The SRV records of an answer. A name that does not exist is no records.
fn parse_answer(msg: &[u8]) -> Result<Vec<Srv>, String> {
    let bad = || "a malformed DNS answer".to_owned();
    let u16_at = |at: usize| -> Result<u16, String> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(bad)
    };
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 {
        return Err(bad());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Vec::new()), // NXDOMAIN
        rcode => return Err(format!("the resolver answered error {rcode}")),
    }
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        let (_, after) = read_name(msg, at)?;
        let ty = u16_at(after)?;
        let class = u16_at(after + 2)?;
        let len = u16_at(after + 8)? as usize;
        let data = after + 10;
        if data + len > msg.len() {
            return Err(bad());
        }
        if ty == TYPE_SRV && class == CLASS_IN && len >= 7 {
            let (target, _) = read_name(msg, data + 6)?;
            out.push(Srv {
                priority: u16_at(data)?,
                weight: u16_at(data + 2)?,
                port: u16_at(data + 4)?,
                target,
            });
        }
        at = data + len;
    }
    Ok(out)
}

/// A (possibly compressed) name at `at`: the name, and where what follows it starts.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let bad = || "a malformed name in a DNS answer".to_owned();
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at).ok_or_else(bad)? as usize;
        match len {
            0 => {
                let end = end.unwrap_or(at + 1);
                return Ok((labels.join("."), end));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(at + 1).ok_or_else(bad)? as usize;
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > 16 {
                    return Err(bad());
                }
                at = ((l & 0x3f) << 8) | low;
            }
            l if l <= 63 => {
                let label = msg.get(at + 1..at + 1 + l).ok_or_else(bad)?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                if labels.iter().map(|l| l.len() + 1).sum::<usize>() > 255 {
                    return Err(bad());
                }
                at += 1 + l;
            }
            _ => return Err(bad()),
        }
    }
}

/// An answer to a question (tests: a resolver on loopback that knows some SRV records).
pub fn answer_for(query: &[u8], records: &[(String, Srv)]) -> Option<Vec<u8>> {
    let (name, after) = read_name(query, 12).ok()?;
    let question = query.get(12..after + 4)?;
    let found: Vec<&Srv> = records
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, r)| r)
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(query.get(0..2)?);
    let rcode: u8 = if found.is_empty() { 3 } else { 0 };
    out.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    out.extend_from_slice(&(found.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for r in found {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&TYPE_SRV.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&300u32.to_be_bytes());
        let mut data = Vec::new();
        data.extend_from_slice(&r.priority.to_be_bytes());
        data.extend_from_slice(&r.weight.to_be_bytes());
        data.extend_from_slice(&r.port.to_be_bytes());
        for label in r.target.split('.') {
            data.push(label.len() as u8);
            data.extend_from_slice(label.as_bytes());
        }
        data.push(0);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    #[test]
    fn an_answer_reads_back_as_the_records_it_carries() {
        let query = question(7, "_matrix-fed._tcp.example.org").unwrap();
        let records = vec![
            (
                "_matrix-fed._tcp.example.org".to_owned(),
                srv(10, 5, 8448, "matrix.example.org"),
            ),
            (
                "_matrix-fed._tcp.example.org".to_owned(),
                srv(5, 0, 443, "edge.example.org"),
            ),
            (
                "_matrix-fed._tcp.other.org".to_owned(),
                srv(1, 1, 1, "other.org"),
            ),
        ];
        let answer = answer_for(&query, &records).unwrap();
        let got = parse_answer(&answer).unwrap();
        assert_eq!(
            got,
            vec![
                srv(10, 5, 8448, "matrix.example.org"),
                srv(5, 0, 443, "edge.example.org")
            ]
        );
        let none = answer_for(
            &question(8, "_matrix-fed._tcp.nowhere.org").unwrap(),
            &records,
        )
        .unwrap();
        assert_eq!(parse_answer(&none).unwrap(), vec![]);
    }

    #[test]
    fn malformed_answers_are_refused_not_followed() {
        // A name that points at itself, a truncated record, a label past the end.
        let mut looped = question(1, "a.example").unwrap();
        looped[2] = 0x81;
        looped[7] = 1; // one answer
        looped.extend_from_slice(&[0xc0, looped.len() as u8]);
        assert!(parse_answer(&looped).is_err());
        let query = question(2, "b.example").unwrap();
        let records = vec![("b.example".to_owned(), srv(1, 1, 1, "t.example"))];
        let answer = answer_for(&query, &records).unwrap();
        assert!(parse_answer(&answer[..answer.len() - 3]).is_err());
        assert!(read_name(&[5, b'a'], 0).is_err());
        assert!(question(3, "a..b").is_err());
    }
}
