//! Loopback ports for the world's servers that run as processes of their own (moto, etcd, the
//! API server). Such a server is told a port and binds it later, so between the ask and the bind
//! the kernel may hand the same port to another world of the same test binary; a world that then
//! talks to its neighbour's moto gets that moto's answers (an `InvalidClientTokenId` once the
//! neighbour enforces IAM). Two guards: a port is handed out once per process, and a caller can
//! check that its own child is the one listening.

use std::collections::HashSet;
use std::sync::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port free now and never handed out before by this process.
pub fn reserve() -> Result<u16, String> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("a free loopback port: {e}"))?;
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err("no loopback port left that this process has not handed out".to_owned())
}

/// Whether process `pid` holds the socket listening on loopback `port` (Linux: the listening
/// socket's inode in `/proc/net/tcp`, found among the process's file descriptors).
pub fn listened_on_by(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Fields: sl local_address rem_address st ... inode (the tenth); 0A is LISTEN.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let listening = *fields.get(3)? == "0A";
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (listening && local_port == port).then(|| fields.get(9).map(|s| s.to_string()))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            inodes
                .iter()
                .any(|inode| target.to_string_lossy() == format!("socket:[{inode}]"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_and_its_listener_is_found() {
        let ports: HashSet<u16> = (0..50).map(|_| reserve().unwrap()).collect();
        assert_eq!(ports.len(), 50);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listened_on_by(std::process::id(), port));
        drop(listener);
        assert!(!listened_on_by(std::process::id(), port));
    }
}
