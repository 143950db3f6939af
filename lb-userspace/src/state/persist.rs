//! Control state that survives the daemon: after every accepted change the services,
//! backends, weights, ids and table regions are written to `<state dir>/state.json`
//! atomically (a temporary file, fsync, rename, fsync of the directory), and a starting
//! daemon rebuilds its [`ControlState`] from it with [`ControlState::restore`].
//!
//! Restoring over adopted maps writes no table whose service entry already says what the
//! file says, so the data path keeps the same slots; a service the maps hold differently
//! (a change made just before a crash, not yet saved) is published again from the file, into
//! the half its live generation does not use.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{BackendSlot, ControlState, Service, StateError, publish, table_offset};
use crate::addr::{BackendAddr, ServiceAddr};
use crate::affinity::Affinity;
use crate::alloc::{IdPool, Regions};
use crate::check::CheckSettings;
use crate::dataplane::Dataplane;
use crate::forwarding::Forwarding;
use crate::health::{Health, HealthState};
use lb_common::ServiceValue;

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Bumped when the file's meaning changes; an unknown version is refused.
const FORMAT: u32 = 1;

/// What the daemon was started with, kept beside the control state so a restart with other
/// settings can be told apart from an adoption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonSettings {
    pub interfaces: Vec<String>,
    /// `native` or `skb`.
    pub mode: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub format: u32,
    pub daemon: DaemonSettings,
    pub control: ControlSnapshot,
}

/// A [`ControlState`] without its data path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlSnapshot {
    half: u32,
    services: Vec<SavedService>,
    service_ids: IdPool,
    backend_indexes: IdPool,
    regions: Regions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedService {
    service: String,
    id: u32,
    table_size: u32,
    region: u32,
    generation: u32,
    backends: Vec<SavedBackend>,
    /// Health-check settings; absent (files of before health checks): none.
    #[serde(default, skip_serializing_if = "CheckSettings::is_none")]
    check: CheckSettings,
    /// `client-ip` affinity's timeout in seconds; absent or 0 (files of before session
    /// affinity): none.
    #[serde(default, skip_serializing_if = "is_zero")]
    affinity_timeout_s: u32,
    /// `nat`, `dsr-l2` or `dsr-ipip`; absent (files of before DSR, and `nat`): nat.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    forwarding: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SavedBackend {
    backend: String,
    index: u32,
    weight: u32,
    /// The checker had found it down: it stays out of the table after a restart until
    /// `rise` checks pass (other verdicts restart as `checking`).
    #[serde(default, skip_serializing_if = "is_false")]
    down: bool,
    /// When its shown state last changed, in ns since the Unix epoch (0: unknown).
    #[serde(default)]
    since_unix_ns: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why the state directory could not be used; one line each.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("state dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another xlbd holds the state dir {} (a lock); stop it first", .0.display())]
    Locked(PathBuf),
    #[error("{}: not a state file of this xlbd: {reason} (start with --reset to start empty)", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The state directory: locked while the daemon runs, holding [`STATE_FILE`].
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    daemon: DaemonSettings,
    _lock: File,
}

impl Store {
    /// Makes `dir` if needed and takes its lock (`<dir>/lock`, flock).
    pub fn open(dir: &Path, daemon: DaemonSettings) -> Result<Store, PersistError> {
        let io = |source| PersistError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(PersistError::Locked(dir.to_path_buf()));
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            daemon,
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Saved>, PersistError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Io { path, source }),
        };
        let corrupt = |reason: String| PersistError::Corrupt {
            path: path.clone(),
            reason,
        };
        let saved: Saved = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if saved.format != FORMAT {
            return Err(corrupt(format!(
                "format {} (this xlbd reads {FORMAT})",
                saved.format
            )));
        }
        Ok(Some(saved))
    }

    /// Writes `control` atomically: readers see the old file or the new one, whole, and
    /// after a crash the file is one of the two.
    pub fn save(&self, control: ControlSnapshot) -> Result<(), PersistError> {
        let saved = Saved {
            format: FORMAT,
            daemon: self.daemon.clone(),
            control,
        };
        let text = serde_json::to_string_pretty(&saved).expect("the state serializes");
        write_atomically(&self.dir, STATE_FILE, text.as_bytes()).map_err(|source| {
            PersistError::Io {
                path: self.path(),
                source,
            }
        })
    }
}

/// Temp file in the same directory, write, fsync, rename over `name`, fsync the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl<D: Dataplane> ControlState<D> {
    /// The state as [`Store::save`] keeps it.
    pub fn snapshot(&self) -> ControlSnapshot {
        let services = self
            .services
            .iter()
            .map(|(addr, s)| SavedService {
                service: addr.to_string(),
                id: s.id,
                table_size: s.table_size,
                region: s.region,
                generation: s.generation,
                backends: s
                    .backends
                    .iter()
                    .map(|(b, slot)| SavedBackend {
                        backend: b.to_string(),
                        index: slot.index,
                        weight: slot.weight,
                        down: s.check.is_on() && slot.health.state == HealthState::Down,
                        since_unix_ns: slot
                            .since
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_nanos() as u64),
                    })
                    .collect(),
                check: s.check.clone(),
                affinity_timeout_s: s.affinity.timeout_s(),
                forwarding: if s.forwarding.is_dsr() {
                    s.forwarding.to_string()
                } else {
                    String::new()
                },
            })
            .collect();
        ControlSnapshot {
            half: self.half,
            services,
            service_ids: self.service_ids.clone(),
            backend_indexes: self.backend_indexes.clone(),
            regions: self.regions.clone(),
        }
    }

    /// Rebuilds the state `snap` describes over `dp`. Backend entries are written again
    /// (the same values); a service whose `SERVICES` entry already matches keeps its table
    /// untouched; any other is published from `snap`; services the maps hold that `snap`
    /// does not are removed.
    pub fn restore(dp: D, snap: ControlSnapshot) -> Result<Self, StateError> {
        let mut st = ControlState::new(dp);
        if snap.half != st.half {
            return Err(StateError::Restore(format!(
                "it was saved with a table area of {} slots, xlbd now has {} (--table-area)",
                2 * u64::from(snap.half),
                2 * u64::from(st.half)
            )));
        }
        // Whatever an earlier daemon flipped last, no program may still read a half this
        // restore writes once this grace period has ended.
        let retired = Some(st.dp.start_grace_period());
        let mut services = BTreeMap::new();
        let now = SystemTime::now();
        st.epochs += 1;
        for s in snap.services {
            let addr: ServiceAddr = s.service.parse()?;
            s.check.validate(&addr)?;
            let affinity = Affinity::from_timeout(s.affinity_timeout_s)?;
            let forwarding = Forwarding::from_name_or_default(&s.forwarding)?;
            let mut backends = BTreeMap::new();
            for b in s.backends {
                let backend: BackendAddr = b.backend.parse()?;
                let health = match (s.check.is_on(), b.down) {
                    (true, true) => Health::with_state(HealthState::Down),
                    (on, _) => Health::new(on),
                };
                // The shown state is the same as when saved unless checking starts over.
                let kept = b.weight == 0 || !s.check.is_on() || b.down;
                let since = match b.since_unix_ns {
                    ns if kept && ns > 0 => SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
                    _ => now,
                };
                let slot = BackendSlot {
                    index: b.index,
                    weight: b.weight,
                    health,
                    since,
                    epoch: st.epochs,
                };
                backends.insert(backend, slot);
            }
            let service = Service {
                id: s.id,
                table_size: s.table_size,
                region: s.region,
                generation: s.generation,
                retired,
                backends,
                check: s.check,
                affinity,
                forwarding,
            };
            services.insert(addr, service);
        }
        let live: HashMap<_, _> = st.dp.service_entries()?.into_iter().collect();
        for (addr, s) in &mut services {
            for (b, slot) in &s.backends {
                st.dp.put_backend(slot.index, &b.backend())?;
            }
            let (affinity, affinity_timeout_s) = s.affinity.to_value();
            let want = ServiceValue {
                id: s.id,
                table_offset: table_offset(st.half, s.region, s.generation),
                table_size: s.table_size,
                generation: s.generation,
                affinity,
                affinity_timeout_s,
                forwarding: s.forwarding.to_value(),
                _pad: 0,
            };
            let key = addr.key();
            match live.get(&key) {
                Some(v) if *v == want && s.generation > 0 => continue,
                // Written after the last save: go on from the live generation, so the
                // next one lands in the half no packet reads.
                Some(v) => s.generation = v.generation,
                None => {}
            }
            let (generation, ticket, _) = publish(&mut st.dp, st.half, addr, s)?;
            s.generation = generation;
            s.retired = Some(ticket);
        }
        for key in live.keys() {
            if !services.keys().any(|a| a.key() == *key) {
                st.dp.remove_service(key)?;
            }
        }
        st.services = services;
        st.service_ids = snap.service_ids;
        st.backend_indexes = snap.backend_indexes;
        st.regions = snap.regions;
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FakeDataplane;
    use crate::testing::TempDir;

    fn settings() -> DaemonSettings {
        DaemonSettings {
            interfaces: vec!["veth0".into()],
            mode: "native".into(),
        }
    }

    fn populated() -> ControlState<FakeDataplane> {
        let mut st = ControlState::new(FakeDataplane::new(4096));
        let web: ServiceAddr = "198.18.0.10:80/tcp".parse().unwrap();
        let dns: ServiceAddr = "198.18.0.10:53/udp".parse().unwrap();
        st.add_service(web, Some(1031)).unwrap();
        st.add_service(dns, Some(101)).unwrap();
        for (b, w) in [("198.19.0.2:8080", 100), ("198.19.1.2:8080", 50)] {
            st.add_backend(&web, b.parse().unwrap(), Some(w)).unwrap();
        }
        st.add_backend(&dns, "198.19.2.2:53".parse().unwrap(), None)
            .unwrap();
        st.set_weight(&web, &"198.19.1.2:8080".parse().unwrap(), 0)
            .unwrap();
        st
    }

    #[test]
    fn a_restore_over_the_same_maps_writes_no_table() {
        let st = populated();
        let snap = st.snapshot();
        let before = (st.services(), st.backends(None).unwrap());
        let mut dp = st.into_dataplane();
        // Scribble over everything but the live tables: any table write would show.
        let tables = dp.tables.clone();
        let live: Vec<ServiceValue> = dp.services.values().copied().collect();
        dp.tables.fill(7);
        for v in &live {
            let (a, b) = (
                v.table_offset as usize,
                (v.table_offset + v.table_size) as usize,
            );
            dp.tables[a..b].copy_from_slice(&tables[a..b]);
        }
        let scribbled = dp.tables.clone();
        let st = ControlState::restore(dp, snap.clone()).unwrap();
        assert_eq!((st.services(), st.backends(None).unwrap()), before);
        assert_eq!(st.snapshot(), snap);
        assert!(st.dataplane().tables == scribbled, "a table was rewritten");
    }

    #[test]
    fn a_restore_into_empty_maps_publishes_the_same_tables() {
        let st = populated();
        let snap = st.snapshot();
        let web: ServiceAddr = "198.18.0.10:80/tcp".parse().unwrap();
        let old_table = st.dataplane().live_table(&web.key()).unwrap().to_vec();
        let st = ControlState::restore(FakeDataplane::new(4096), snap).unwrap();
        assert_eq!(st.dataplane().live_table(&web.key()).unwrap(), old_table);
        assert_eq!(st.backends(None).unwrap().len(), 3);
        assert_eq!(st.dataplane().backends.len(), 3);
    }

    #[test]
    fn a_change_the_file_missed_is_published_again_into_the_unused_half() {
        let mut st = populated();
        let snap = st.snapshot();
        let web: ServiceAddr = "198.18.0.10:80/tcp".parse().unwrap();
        let extra: ServiceAddr = "198.18.0.11:80/tcp".parse().unwrap();
        // Changes made after the save: a weight and a whole service.
        st.set_weight(&web, &"198.19.0.2:8080".parse().unwrap(), 7)
            .unwrap();
        st.add_service(extra, Some(101)).unwrap();
        let live_gen = st.dataplane().services[&web.key()].generation;
        let st = ControlState::restore(st.into_dataplane(), snap).unwrap();
        let v = st.dataplane().services[&web.key()];
        assert_eq!(v.generation, live_gen + 1);
        let weights: Vec<u32> = st
            .backends(Some(&web))
            .unwrap()
            .iter()
            .map(|b| b.weight)
            .collect();
        assert_eq!(weights, vec![100, 0]);
        assert!(!st.dataplane().services.contains_key(&extra.key()));
    }

    #[test]
    fn affinity_reaches_the_service_entry_and_survives_a_restore() {
        let mut st = populated();
        let web: ServiceAddr = "198.18.0.10:80/tcp".parse().unwrap();
        let table = st.dataplane().live_table(&web.key()).unwrap().to_vec();
        let a = Affinity::ClientIp { timeout_s: 30 };
        assert_eq!(st.set_affinity(&web, a).unwrap().affinity, a);
        let v = st.dataplane().services[&web.key()];
        assert_eq!(
            (v.affinity, v.affinity_timeout_s),
            (lb_common::AFFINITY_CLIENT_IP, 30)
        );
        // Only the service entry changed: the same table, in the other half.
        assert_eq!(st.dataplane().live_table(&web.key()).unwrap(), table);
        let snap = st.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains("\"affinity_timeout_s\":30"), "{json}");
        let st = ControlState::restore(FakeDataplane::new(4096), snap).unwrap();
        assert_eq!(st.services()[1].affinity, a);
        assert_eq!(st.dataplane().services[&web.key()].affinity_timeout_s, 30);
        // A file of before session affinity has no such field: none.
        let old = json.replace(",\"affinity_timeout_s\":30", "");
        assert_ne!(old, json);
        let snap: ControlSnapshot = serde_json::from_str(&old).unwrap();
        let st = ControlState::restore(FakeDataplane::new(4096), snap).unwrap();
        assert!(st.services().iter().all(|s| s.affinity == Affinity::None));
        // Back to none: the entry says so.
        let mut st = st;
        st.set_affinity(&web, a).unwrap();
        st.set_affinity(&web, Affinity::None).unwrap();
        let v = st.dataplane().services[&web.key()];
        assert_eq!((v.affinity, v.affinity_timeout_s), (0, 0));
    }

    #[test]
    fn a_snapshot_of_another_table_area_is_refused() {
        let snap = populated().snapshot();
        let e = ControlState::restore(FakeDataplane::new(8192), snap)
            .err()
            .unwrap();
        assert!(e.to_string().contains("--table-area"), "{e}");
    }

    #[test]
    fn the_file_round_trips_and_is_replaced_whole() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0, settings()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let snap = populated().snapshot();
        store.save(snap.clone()).unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!((saved.daemon, saved.control), (settings(), snap));
        let names: Vec<String> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_second_store_on_the_dir_is_refused_and_garbage_is_named() {
        let dir = TempDir::new();
        let _first = Store::open(&dir.0, settings()).unwrap();
        let e = Store::open(&dir.0, settings()).err().unwrap();
        assert!(matches!(e, PersistError::Locked(_)), "{e}");
        drop(_first);
        std::fs::write(dir.0.join(STATE_FILE), "{not json").unwrap();
        let store = Store::open(&dir.0, settings()).unwrap();
        let e = store.load().err().unwrap();
        assert!(e.to_string().contains("--reset"), "{e}");
    }
}
