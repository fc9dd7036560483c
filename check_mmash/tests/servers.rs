//! The shipped monitoring configurations, contrib/nagios/mmstats.cfg and
//! contrib/icinga2/mmstats.conf, loaded into the real servers (Debian's
//! Nagios 4 and Icinga 2) and run against a real `mmash` and the demo
//! writer: each service must reach the state its thresholds imply, and
//! killing the writer must turn "jobs alive" CRITICAL.
//!
//! The servers run from a temporary directory, as this user, without
//! systemd: `nagios4 -d` with its own nagios.cfg (Debian's object
//! templates included as a site would), `icinga2 daemon` in the
//! foreground with a perfdata writer. Checks are forced through each
//! server's external command pipe; states are read from Nagios'
//! status.dat and from Icinga's perfdata files.
//!
//! What a site edits is replaced, nothing else: the host's port (Nagios
//! `_MMASH_PORT`, Icinga `vars.mmash_port`), the labels (the demo's
//! `demo.*` for the example `web.*`, `demo.status.2xx` for `jobs.alive`),
//! the stats directory, and the windows (8 s for 60 s and 5 min, so that
//! the files reach a quarter of the window in seconds, not minutes;
//! thresholds and command definitions stay as shipped).
//!
//! Needs: nagios4-core, icinga2-bin, icinga2-common,
//! monitoring-plugins-basic, openssl; installed here through apt-get when
//! missing and running as root, else the test fails naming them. The
//! demo writer is the `demo` example, built by `cargo test --workspace`
//! (alone: `cargo build --example demo`); `mmash` is the binary built next
//! to `check_mmash`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_check_mmash");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The shipped services and the state each must reach against the demo
/// (0 OK, 2 CRITICAL): the demo serves about 2500 requests a second, one
/// in 50 a 5xx (tens per second, over crit=5), each in under a
/// millisecond (p99 under warn=0.3 s), from one live writer.
const EXPECTED: [(&str, u8); 4] = [
    ("web 5xx rate", 2),
    ("web p99", 0),
    ("jobs alive", 0),
    ("web 5xx rate via check_http", 2),
];

/// Longest wait for a server to start or to run a forced check.
const PATIENCE: Duration = Duration::from_secs(90);

/// apt-get runs one at a time in this process (both tests may install).
static APT: Mutex<()> = Mutex::new(());

/// `path` if it exists; else installs `packages` with apt-get when running
/// as root, or fails in one line naming them.
fn ensure(path: &str, packages: &[&str]) -> PathBuf {
    let p = PathBuf::from(path);
    let _one = APT.lock().unwrap_or_else(|e| e.into_inner());
    if p.exists() {
        return p;
    }
    let list = packages.join(" ");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    assert!(
        root,
        "{path} is missing and this test is not root: `apt-get install -y {list}`"
    );
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "-o"])
        .arg("DPkg::Lock::Timeout=300")
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()) && p.exists(),
        "{path} is missing and `apt-get install -y {list}` did not provide it"
    );
    p
}

fn sibling(name: &str) -> PathBuf {
    let p = Path::new(BIN).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: `cargo test --workspace` builds it (alone: `cargo build -p {name}`)",
        p.display()
    );
    p
}

/// The demo writer, wherever its package keeps the example.
fn demo_bin() -> PathBuf {
    let p = Path::new(BIN).with_file_name("examples").join("demo");
    assert!(
        p.is_file(),
        "{} is missing: build the demo with `cargo build --example demo` \
         (`cargo test --workspace` does)",
        p.display()
    );
    p
}

fn who() -> (String, String) {
    let id = |flag: &str| {
        let o = Command::new("id").arg(flag).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    (id("-un"), id("-gn"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits for the start of the next whole second, so that a check stamped
/// at or after it ran after everything done before.
fn next_second() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    std::thread::sleep(Duration::from_secs(t.as_secs() + 1) - t);
    now_secs()
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ends a server by its pid with SIGTERM, so that it stops its own
/// workers.
struct Term(u32);

impl Drop for Term {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// A server run as a child: SIGTERM when dropped, then reaped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(Term(self.0.id()));
        let _ = self.0.wait();
    }
}

/// The demo writing into a private directory, mmash serving it, and a
/// plugin directory with the stock plugins and check_mmash.
struct Stack {
    root: tempfile::TempDir,
    stats: PathBuf,
    plugins: PathBuf,
    demo: Option<Killed>,
    started: Instant,
    _mmash: Killed,
    addr: SocketAddr,
}

impl Stack {
    fn start() -> Stack {
        let check_http = ensure(
            "/usr/lib/nagios/plugins/check_http",
            &["monitoring-plugins-basic"],
        );
        let root = tempfile::tempdir().unwrap();
        chmod(root.path(), 0o755);
        let stats = root.path().join("stats");
        std::fs::create_dir(&stats).unwrap();
        chmod(&stats, 0o755);
        let plugins = root.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        for entry in std::fs::read_dir(check_http.parent().unwrap()).unwrap() {
            let e = entry.unwrap();
            std::os::unix::fs::symlink(e.path(), plugins.join(e.file_name())).unwrap();
        }
        std::os::unix::fs::symlink(BIN, plugins.join("check_mmash")).unwrap();
        let demo = Command::new(demo_bin())
            .arg("--forever")
            .env("MMSTATS_DIR", &stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let demo = Killed(demo);
        let started = Stack::first_file(&stats);
        let mut child = Command::new(sibling("mmash"))
            .args(["--listen", "127.0.0.1:0"])
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "mmash exited");
            if let Some(rest) = line.trim().strip_prefix("mmash: listening on http://") {
                break rest.trim_end_matches('/').parse().unwrap();
            }
        };
        std::thread::spawn(move || for _ in err.lines() {});
        Stack {
            root,
            stats,
            plugins,
            demo: Some(demo),
            started,
            _mmash: Killed(child),
            addr,
        }
    }

    /// Waits until the demo's files are a quarter of the 8 s windows old
    /// (and a little more), so that the first windowed checks are
    /// answered, not UNKNOWN.
    fn settle(&self) {
        let age = Duration::from_millis(2500);
        if let Some(rest) = age.checked_sub(self.started.elapsed()) {
            std::thread::sleep(rest);
        }
    }

    /// Waits for the demo's first stats file.
    fn first_file(stats: &Path) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let any = std::fs::read_dir(stats)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".mmstats"));
            if any {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "the demo made no stats file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A shipped configuration with what a site edits replaced (see the
    /// module doc); each replacement must apply.
    fn adapt(&self, text: &str, pairs: &[(&str, String)]) -> String {
        let mut out = text.to_owned();
        let common = [
            ("web.status.5xx", "demo.status.5xx".to_owned()),
            ("web.request", "demo.request".to_owned()),
            ("jobs.alive", "demo.status.2xx".to_owned()),
            ("/dev/shm/mmstats-1000", self.stats.display().to_string()),
        ];
        for (from, to) in common.iter().chain(pairs) {
            assert!(
                out.contains(from),
                "{from:?} is no longer in the shipped config"
            );
            out = out.replace(from, to);
        }
        out
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes external commands to a server's command pipe.
fn command(pipe: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(pipe).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn force(host: &str, service: &str) -> String {
    let t = now_secs();
    format!("[{t}] SCHEDULE_FORCED_SVC_CHECK;{host};{service};{t}")
}

/// Polls `read` until it returns a result for every service, at most
/// [`PATIENCE`]; `what` names the server in the failure.
fn wait_for<T>(what: &str, mut read: impl FnMut() -> Option<T>, log: &Path) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = read() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no result after {PATIENCE:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A service's state, output and check time as a server reported it.
#[derive(Clone, Debug)]
struct Seen {
    state: u8,
    output: String,
    at: u64,
}

/// The `servicestatus` blocks of Nagios' status.dat, by description.
fn nagios_status(path: &Path) -> HashMap<String, Seen> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = HashMap::new();
    for block in text.split("servicestatus {").skip(1) {
        let block = block.split('}').next().unwrap_or("");
        let kv: HashMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .collect();
        if kv.get("has_been_checked") != Some(&"1") {
            continue;
        }
        let (Some(name), Some(state), Some(at)) = (
            kv.get("service_description"),
            kv.get("current_state").and_then(|s| s.parse().ok()),
            kv.get("last_check").and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let output = kv.get("plugin_output").unwrap_or(&"").to_string();
        out.insert(name.to_string(), Seen { state, output, at });
    }
    out
}

/// The newest line of each service in Icinga's perfdata files.
fn icinga_perfdata(dir: &Path) -> HashMap<String, Seen> {
    let mut out: HashMap<String, Seen> = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let kv: HashMap<&str, &str> = line
                .split('\t')
                .filter_map(|f| f.split_once("::"))
                .collect();
            let (Some(name), Some(state), Some(at)) = (
                kv.get("SERVICEDESC"),
                kv.get("SERVICESTATEID").and_then(|s| s.parse().ok()),
                kv.get("LASTCHECK")
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|t| t as u64),
            ) else {
                continue;
            };
            let output = kv.get("SERVICEOUTPUT").unwrap_or(&"").to_string();
            let seen = Seen { state, output, at };
            match out.get(*name) {
                Some(old) if old.at > seen.at => {}
                _ => {
                    out.insert(name.to_string(), seen);
                }
            }
        }
    }
    out
}

/// Every service of `want` checked at or after `since`, or `None` yet.
fn all_checked(
    seen: &HashMap<String, Seen>,
    want: &[&str],
    since: u64,
) -> Option<HashMap<String, Seen>> {
    want.iter()
        .all(|s| seen.get(*s).is_some_and(|x| x.at >= since))
        .then(|| seen.clone())
}

/// Asserts the states of [`EXPECTED`]; the outputs name the value, so a
/// check that only failed to connect cannot pass for CRITICAL.
fn assert_expected(server: &str, seen: &HashMap<String, Seen>) {
    for (service, state) in EXPECTED {
        let s = &seen[service];
        assert_eq!(s.state, state, "{server}: {service}: {s:?}");
        let word = if state == 0 { "OK" } else { "CRITICAL" };
        assert!(
            s.output.contains(&format!("MMSTATS {word} - ")),
            "{server}: {service}: {s:?}"
        );
    }
}

/// Kills the demo and forces "jobs alive" until it reads CRITICAL from a
/// check that started after the kill.
fn writer_killed(
    server: &str,
    stack: &mut Stack,
    pipe: &Path,
    read: impl Fn() -> HashMap<String, Seen>,
    log: &Path,
) {
    drop(stack.demo.take());
    let since = next_second();
    command(pipe, &[force("web1", "jobs alive")]);
    let seen = wait_for(server, || all_checked(&read(), &["jobs alive"], since), log);
    let s = &seen["jobs alive"];
    assert_eq!(s.state, 2, "{server}: jobs alive after the kill: {s:?}");
    assert!(
        s.output.contains("demo.status.2xx count 0"),
        "{server}: {s:?}"
    );
}

#[test]
fn nagios4_runs_the_shipped_services() {
    let nagios = ensure("/usr/sbin/nagios4", &["nagios4-core"]);
    let mut stack = Stack::start();
    let r = stack.root.path().to_path_buf();
    let shipped =
        std::fs::read_to_string(Path::new(REPO).join("contrib/nagios/mmstats.cfg")).unwrap();
    let cfg = stack.adapt(
        &shipped,
        &[
            (
                "_MMASH_PORT     8787",
                format!("_MMASH_PORT {}", stack.addr.port()),
            ),
            ("--rate 60s", "--rate 8s".into()),
            ("--window 5m", "--window 8s".into()),
            ("rate=60s", "rate=8s".into()),
        ],
    );
    std::fs::write(r.join("mmstats.cfg"), cfg).unwrap();
    std::fs::write(
        r.join("resource.cfg"),
        format!("$USER1$={}\n", stack.plugins.display()),
    )
    .unwrap();
    std::fs::create_dir(r.join("checkresults")).unwrap();
    let (user, group) = who();
    let p = |name: &str| r.join(name).display().to_string();
    let main = format!(
        "log_file={log}\n\
         cfg_dir=/etc/nagios-plugins/config\n\
         cfg_file=/etc/nagios4/objects/commands.cfg\n\
         cfg_file=/etc/nagios4/objects/contacts.cfg\n\
         cfg_file=/etc/nagios4/objects/timeperiods.cfg\n\
         cfg_file=/etc/nagios4/objects/templates.cfg\n\
         cfg_file={cfg}\n\
         resource_file={res}\n\
         status_file={status}\n\
         status_update_interval=1\n\
         object_cache_file={cache}\n\
         precached_object_file={precache}\n\
         temp_file={tmp}\n\
         temp_path={root}\n\
         lock_file={lock}\n\
         check_result_path={results}\n\
         command_file={cmd}\n\
         check_external_commands=1\n\
         state_retention_file={retention}\n\
         retain_state_information=0\n\
         enable_notifications=0\n\
         query_socket={qh}\n\
         nagios_user={user}\n\
         nagios_group={group}\n\
         illegal_macro_output_chars=`~$&|'\"<>\n",
        log = p("nagios.log"),
        cfg = p("mmstats.cfg"),
        res = p("resource.cfg"),
        status = p("status.dat"),
        cache = p("objects.cache"),
        precache = p("objects.precache"),
        tmp = p("nagios.tmp"),
        root = r.display(),
        lock = p("nagios.lock"),
        results = p("checkresults"),
        cmd = p("nagios.cmd"),
        retention = p("retention.dat"),
        qh = p("nagios.qh"),
    );
    std::fs::write(r.join("nagios.cfg"), main).unwrap();
    let verify = Command::new(&nagios)
        .arg("-v")
        .arg(r.join("nagios.cfg"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "nagios4 -v:\n{text}");
    assert!(text.contains("Total Warnings: 0"), "nagios4 -v:\n{text}");
    let status = Command::new(&nagios)
        .arg("-d")
        .arg(r.join("nagios.cfg"))
        .status()
        .unwrap();
    assert!(status.success(), "nagios4 -d failed");
    let log = r.join("nagios.log");
    let pipe = r.join("nagios.cmd");
    let pid: u32 = wait_for(
        "nagios4 start",
        || {
            use std::os::unix::fs::FileTypeExt;
            let fifo = std::fs::metadata(&pipe).is_ok_and(|m| m.file_type().is_fifo());
            let pid = std::fs::read_to_string(r.join("nagios.lock")).ok()?;
            fifo.then(|| pid.trim().parse().ok()).flatten()
        },
        &log,
    );
    let _stop = Term(pid);
    stack.settle();
    let since = now_secs();
    let lines: Vec<String> = EXPECTED.iter().map(|(s, _)| force("web1", s)).collect();
    command(&pipe, &lines);
    let names: Vec<&str> = EXPECTED.iter().map(|(s, _)| *s).collect();
    let status_dat = r.join("status.dat");
    let seen = wait_for(
        "nagios4 checks",
        || all_checked(&nagios_status(&status_dat), &names, since),
        &log,
    );
    eprintln!("nagios4: {seen:#?}");
    assert_expected("nagios4", &seen);
    writer_killed(
        "nagios4",
        &mut stack,
        &pipe,
        || nagios_status(&status_dat),
        &log,
    );
}

#[test]
fn icinga2_runs_the_shipped_services() {
    let icinga = ensure("/usr/sbin/icinga2", &["icinga2-bin", "icinga2-common"]);
    let openssl = ensure("/usr/bin/openssl", &["openssl"]);
    let mut stack = Stack::start();
    let r = stack.root.path().to_path_buf();
    let shipped =
        std::fs::read_to_string(Path::new(REPO).join("contrib/icinga2/mmstats.conf")).unwrap();
    let conf = stack.adapt(
        &shipped,
        &[
            (
                "vars.mmash_rate = \"60s\"",
                "vars.mmash_rate = \"8s\"".into(),
            ),
            (
                "vars.mmash_window = \"5m\"",
                "vars.mmash_window = \"8s\"".into(),
            ),
            ("rate=60s", "rate=8s".into()),
        ],
    );
    // The zone of the host, as a distributed setup keeps it.
    let zone = r.join("zones.d/master");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("mmstats.conf"), conf).unwrap();
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        zone.join("hosts.conf"),
        format!(
            "object Host \"web1\" {{\n  address = \"127.0.0.1\"\n  check_command = \"dummy\"\n  \
             vars.mmash = true\n  vars.mmash_port = {}\n  vars.agent_endpoint = \"web1\"\n}}\n",
            stack.addr.port()
        ),
    )
    .unwrap();
    // The local endpoint's certificates, so that the agent named by
    // command_endpoint is this instance.
    let certs = r.join("data/certs");
    std::fs::create_dir_all(&certs).unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca",
        "req -newkey rsa:2048 -nodes -keyout web1.key -out web1.csr -subj /CN=web1",
        "x509 -req -in web1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out web1.crt -days 2",
    ] {
        let out = Command::new(&openssl)
            .args(args.split(' '))
            .current_dir(&certs)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {out:?}");
    }
    let perf = r.join("perfdata");
    std::fs::create_dir(&perf).unwrap();
    for d in ["log", "cache", "spool", "run"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    let p = |name: &str| r.join(name).display().to_string();
    let main = format!(
        "const PluginDir = \"{plugins}\"\n\
         const NodeName = \"web1\"\n\
         const ZoneName = \"master\"\n\
         include <itl>\n\
         include <plugins>\n\
         object IcingaApplication \"app\" {{ }}\n\
         object CheckerComponent \"checker\" {{ }}\n\
         object ExternalCommandListener \"command\" {{ command_path = \"{cmd}\" }}\n\
         object PerfdataWriter \"perfdata\" {{\n\
           service_perfdata_path = \"{perf}/service\"\n\
           service_temp_path = \"{perf}/service.tmp\"\n\
           host_perfdata_path = \"{perf}/host\"\n\
           host_temp_path = \"{perf}/host.tmp\"\n\
           service_format_template = \"SERVICEDESC::$service.name$\\tSERVICESTATEID::$service.state_id$\\tLASTCHECK::$service.last_check$\\tSERVICEOUTPUT::$service.output$\\tSERVICEPERFDATA::$service.perfdata$\"\n\
           rotation_interval = 1s\n\
         }}\n\
         object Endpoint \"web1\" {{ }}\n\
         object Zone \"master\" {{ endpoints = [ \"web1\" ] }}\n\
         object ApiListener \"api\" {{ bind_host = \"127.0.0.1\"; bind_port = {api_port} }}\n",
        plugins = stack.plugins.display(),
        cmd = p("icinga2.cmd"),
        perf = perf.display(),
    );
    std::fs::write(r.join("icinga2.conf"), main).unwrap();
    let (user, group) = who();
    let defines = [
        format!("-DZonesDir={}", p("zones.d")),
        format!("-DDataDir={}", p("data")),
        format!("-DLogDir={}", p("log")),
        format!("-DCacheDir={}", p("cache")),
        format!("-DSpoolDir={}", p("spool")),
        format!("-DInitRunDir={}", p("run")),
        format!("-DRunAsUser={user}"),
        format!("-DRunAsGroup={group}"),
    ];
    let log = r.join("icinga2.out");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&icinga)
        .arg("daemon")
        .arg("-c")
        .arg(r.join("icinga2.conf"))
        .args(&defines)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let _server = Server(child);
    let pipe = r.join("icinga2.cmd");
    wait_for(
        "icinga2 start",
        || {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(&pipe)
                .is_ok_and(|m| m.file_type().is_fifo())
                .then_some(())
        },
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Instantiated 4 Services."),
        "icinga2 did not make the 4 shipped services:\n{text}"
    );
    stack.settle();
    let since = now_secs();
    let lines: Vec<String> = EXPECTED.iter().map(|(s, _)| force("web1", s)).collect();
    command(&pipe, &lines);
    let names: Vec<&str> = EXPECTED.iter().map(|(s, _)| *s).collect();
    let seen = wait_for(
        "icinga2 checks",
        || all_checked(&icinga_perfdata(&perf), &names, since),
        &log,
    );
    eprintln!("icinga2: {seen:#?}");
    assert_expected("icinga2", &seen);
    // The port came from the host, not from a service-level override.
    let via_http = &seen["web 5xx rate via check_http"];
    assert!(
        via_http.output.contains("HTTP CRITICAL"),
        "icinga2: {via_http:?}"
    );
    writer_killed(
        "icinga2",
        &mut stack,
        &pipe,
        || icinga_perfdata(&perf),
        &log,
    );
}
