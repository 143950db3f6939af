use super::*;
use crate::testing::TempDir;

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("xlbd").chain(args.iter().copied()))
}

#[test]
fn interfaces_repeat_and_split_on_commas() {
    let a = parse(&["--iface", "veth0,veth1", "--iface", "eth2"]).unwrap();
    assert_eq!(a.ifaces, ["veth0", "veth1", "eth2"]);
    assert_eq!(a.mode(), AttachMode::Native);
    assert_eq!(a.pin_dir, PathBuf::from("/sys/fs/bpf/xlb"));
    assert_eq!(a.flow_entries, lb_common::DEFAULT_FLOW_ENTRIES);
    assert_eq!(a.table_area, lb_common::DEFAULT_TABLE_AREA);
    let o = a.load_options();
    assert_eq!((o.ifaces.len(), o.mode), (3, AttachMode::Native));
}

#[test]
fn arguments_are_checked() {
    assert!(parse(&[]).is_err());
    assert!(parse(&["--iface", ""]).is_err());
    assert!(parse(&["--iface", "eth0", "--mode", "offload"]).is_err());
    assert!(parse(&["--iface", "eth0", "--flow-entries", "0"]).is_err());
    let a = parse(&["--iface", "eth0", "--mode", "skb", "--table-area", "1000"]).unwrap();
    assert_eq!((a.mode(), a.table_area), (AttachMode::Skb, 1000));
}

#[tokio::test]
async fn prepare_socket_creates_the_directory() {
    let tmp = TempDir::new();
    let sock = tmp.0.join("run/xlb/xlbd.sock");
    prepare_socket(&sock).await.unwrap();
    assert!(sock.parent().unwrap().is_dir());
    let listener = bind(&sock).unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(listener);
}

#[tokio::test]
async fn prepare_socket_refuses_a_live_daemon_and_removes_a_stale_socket() {
    let tmp = TempDir::new();
    let sock = tmp.0.join("xlbd.sock");
    let live = bind(&sock).unwrap();
    let e = prepare_socket(&sock).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("another xlbd is running on {}", sock.display())
    );
    drop(live);
    // The file stays behind, and nothing listens on it any more.
    assert!(sock.exists());
    prepare_socket(&sock).await.unwrap();
    assert!(!sock.exists());
}

#[tokio::test]
async fn prepare_socket_leaves_other_files_alone() {
    let tmp = TempDir::new();
    let path = tmp.0.join("not-a-socket");
    std::fs::write(&path, "x").unwrap();
    let e = prepare_socket(&path).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("exists and is not a socket; not removing it")
    );
    assert!(path.exists());
}

#[tokio::test]
async fn a_failed_load_is_reported_and_binds_nothing() {
    let tmp = TempDir::new();
    let sock = tmp.0.join("xlbd.sock");
    let state = tmp.0.join("state");
    let args = parse(&[
        "--iface",
        "nope0",
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ])
    .unwrap();
    let load = |o: &LoadOptions| -> Result<crate::dataplane::FakeDataplane, LoadError> {
        Err(LoadError::NoSuchInterface(o.ifaces[0].clone()))
    };
    let e = run(args, load).await.unwrap_err();
    assert_eq!(e.to_string(), "no such interface: nope0");
    assert!(!sock.exists());
    assert!(!state.join(crate::state::STATE_FILE).exists());
}

/// Arguments for a daemon over a temp dir: socket, state dir and pin dir in it.
fn args_in(tmp: &TempDir, extra: &[&str]) -> Args {
    let p = |name: &str| tmp.0.join(name).to_string_lossy().into_owned();
    let (sock, state, pins) = (p("xlbd.sock"), p("state"), p("pins"));
    std::fs::create_dir_all(&pins).unwrap();
    let base = [
        "--iface",
        "veth0",
        "--socket",
        &sock,
        "--state-dir",
        &state,
        "--pin-dir",
        &pins,
    ];
    parse(&[&base[..], extra].concat()).unwrap()
}

fn no_load(_: &LoadOptions) -> Result<crate::dataplane::FakeDataplane, LoadError> {
    panic!("the data path must not be touched")
}

#[tokio::test]
async fn a_restart_in_another_mode_is_refused_before_the_data_path_is_touched() {
    let tmp = TempDir::new();
    let native = args_in(&tmp, &[]);
    let store = Store::open(&native.state_dir, native.settings()).unwrap();
    let empty = ControlState::new(crate::dataplane::FakeDataplane::new(64));
    store.save(empty.snapshot()).unwrap();
    drop(store);
    let e = run(args_in(&tmp, &["--mode", "skb"]), no_load)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("in native mode, this one is in skb mode"),
        "{e}"
    );
}

#[tokio::test]
async fn live_services_without_saved_state_are_refused() {
    let tmp = TempDir::new();
    let load = |_: &LoadOptions| -> Result<crate::dataplane::FakeDataplane, LoadError> {
        let mut dp = crate::dataplane::FakeDataplane::new(64);
        dp.services.insert(Default::default(), Default::default());
        Ok(dp)
    };
    let e = run(args_in(&tmp, &[]), load).await.unwrap_err();
    assert!(e.to_string().contains("no saved state"), "{e}");
}

#[test]
fn nonsense_arguments_get_one_line_naming_the_limit() {
    let long = "e".repeat(10_000);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--iface", "eth0", "--flow-entries", "1"],
            "flow entries 1 out of range (2-4294967295)",
        ),
        (
            &["--iface", "eth0", "--flow-entries", "-1"],
            "flow entries -1 out of range (2-4294967295)",
        ),
        (
            &["--iface", "eth0", "--flow-entries", "4294967296"],
            "flow entries 4294967296 out of range (2-4294967295)",
        ),
        (
            &["--iface", "eth0", "--table-area", "201"],
            "table area 201 out of range (202-4294967295)",
        ),
        (&["--iface", ""], "interface name \"\" is empty"),
        (
            &["--iface", "veth0,xlbL1234567890ab"],
            "interface name \"xlbL1234567890ab\" is longer than 15 bytes (Linux's IFNAMSIZ)",
        ),
        (
            &["--iface", "eth0", "--announce-table", "254"],
            "--announce-table 254: table 254 is the kernel's main table, which forwards packets; choose a table of its own (e.g. 100) that the BGP speaker reads",
        ),
        (
            &["--iface", "eth0", "--announce-table", "hundred"],
            "--announce-table hundred: not a table number (1-4294967295, other than 253, 254 and 255)",
        ),
        (
            &["--iface", "eth0\n"],
            "interface name \"eth0\\n\" has a '/', ':', space or control character (Linux does not allow them)",
        ),
    ];
    for (args, want) in cases {
        let e = parse(args).unwrap_err();
        assert_eq!(crate::cli::usage_error_line(e), *want, "{args:?}");
    }
    let e = crate::cli::usage_error_line(parse(&["--iface", &long]).unwrap_err());
    assert!(
        e.ends_with("…\" is longer than 15 bytes (Linux's IFNAMSIZ)"),
        "{e}"
    );
    assert!(e.chars().count() < 150, "{e}");
    let a = parse(&[
        "--iface",
        "eth0",
        "--flow-entries",
        "2",
        "--table-area",
        "202",
    ])
    .unwrap();
    assert_eq!((a.flow_entries, a.table_area), (2, 202));
    assert_eq!(a.announce_table, None);
    let a = parse(&["--iface", "eth0", "--announce-table", "100"]).unwrap();
    assert_eq!(a.announce_table, Some(crate::announce::KernelTable(100)));
}

#[test]
fn modes_are_spelled_as_the_flag() {
    assert_eq!(AttachMode::Native.to_string(), "native");
    assert_eq!(AttachMode::Skb.to_string(), "skb");
    let e = LoadError::Attach {
        iface: "veth0".into(),
        mode: AttachMode::Native,
        reason: "no".into(),
    };
    assert_eq!(
        e.to_string(),
        "cannot attach XDP to veth0 in native mode: no"
    );
    assert_eq!(control::mode_name(AttachMode::Skb), "skb");
}

#[test]
fn a_config_file_gives_interfaces_and_mode_unless_flags_do() {
    let tmp = TempDir::new();
    let path = tmp.0.join("xlb.toml");
    std::fs::write(
        &path,
        "[daemon]\ninterfaces = [\"veth7\"]\nmode = \"skb\"\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let mut a = parse(&["--config", file]).unwrap();
    assert!(startup::read_config(&mut a).unwrap().is_some());
    assert_eq!(
        (a.ifaces.clone(), a.mode()),
        (vec!["veth7".into()], AttachMode::Skb)
    );

    let mut a = parse(&["--config", file, "--iface", "eth0", "--mode", "native"]).unwrap();
    startup::read_config(&mut a).unwrap();
    assert_eq!(
        (a.ifaces.clone(), a.mode()),
        (vec!["eth0".into()], AttachMode::Native)
    );

    std::fs::write(&path, "[[service]]\naddress = \"198.18.0.10:80/tcp\"\n").unwrap();
    let mut a = parse(&["--config", file]).unwrap();
    let e = startup::read_config(&mut a).err().unwrap();
    assert!(
        e.to_string().starts_with("no interface to attach to"),
        "{e}"
    );

    std::fs::write(&path, "[daemon]\ninterfaces = [\"eth0\"]\nmod = \"skb\"\n").unwrap();
    let mut a = parse(&["--config", file]).unwrap();
    let e = startup::read_config(&mut a).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!("{file}:3: daemon: unknown field `mod`, expected `interfaces` or `mode`")
    );
}

#[tokio::test]
async fn the_config_files_services_are_applied_at_start_and_errors_name_the_line() {
    use crate::dataplane::FakeDataplane;
    let tmp = TempDir::new();
    let path = tmp.0.join("xlb.toml");
    let file = path.to_str().unwrap();
    // Half the table area is 256 slots: the second service does not fit.
    std::fs::write(
        &path,
        "[[service]]\naddress = \"198.18.0.10:80/tcp\"\ntable_size = 131\n\n\
         [[service]]\naddress = \"198.18.0.11:80/tcp\"\ntable_size = 257\n",
    )
    .unwrap();
    let mut a = parse(&["--config", file, "--iface", "veth0"]).unwrap();
    let start = startup::read_config(&mut a).unwrap();
    let state = Mutex::new(ControlState::new(FakeDataplane::new(512)));
    let e = startup::apply_config(&state, start.as_ref())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{file}:6: service \"198.18.0.11:80/tcp\": table size 257 does not fit in half the table area (256 slots; see xlbd --table-area)"
        )
    );
    assert!(state.lock().await.services().is_empty());

    std::fs::write(
        &path,
        "[[service]]\naddress = \"198.18.0.10:80/tcp\"\ntable_size = 131\n",
    )
    .unwrap();
    let start = startup::read_config(&mut a).unwrap();
    startup::apply_config(&state, start.as_ref()).await.unwrap();
    assert_eq!(state.lock().await.services().len(), 1);
}

#[tokio::test]
async fn a_public_metrics_address_is_refused_before_anything_is_touched() {
    let tmp = TempDir::new();
    let args = args_in(&tmp, &["--metrics-addr", "0.0.0.0:9100"]);
    let e = run(args.clone(), no_load).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--metrics-addr 0.0.0.0:9100 is not a loopback address"),
        "{e}"
    );
    assert!(!args.socket.exists());
    assert!(!args.state_dir.exists());
    let e = parse(&["--iface", "eth0", "--metrics-addr", "localhost"]).unwrap_err();
    assert_eq!(
        crate::cli::usage_error_line(e),
        "invalid value 'localhost' for '--metrics-addr <ADDR:PORT>': invalid socket address syntax (try --help)"
    );
    // --metrics-public needs --metrics-addr; with it, the address is accepted.
    assert!(parse(&["--iface", "eth0", "--metrics-public"]).is_err());
    let a = parse(&[
        "--iface",
        "eth0",
        "--metrics-addr",
        "198.18.0.1:9100",
        "--metrics-public",
    ])
    .unwrap();
    assert!(metrics::check_addr(a.metrics_addr.unwrap(), a.metrics_public).is_ok());
}

#[tokio::test]
async fn the_socket_is_private_from_its_creation() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = TempDir::new();
    let sock = tmp.0.join("xlbd.sock");
    // Without the chmod: the mode bind(2) gave it under the umask.
    let listener = with_umask(0o177, || UnixListener::bind(&sock)).unwrap();
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid(2) cannot fail.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    drop(listener);
}
