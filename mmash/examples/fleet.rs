//! A fleet of writer processes for mmash's benchmark: `fleet DIR PROCS
//! THREADS` starts PROCS child processes, each with THREADS threads, and each
//! thread writes its own stats file of 50 fields (40 counters, 8 gauges and 2
//! timers). Prints `ready` when every file exists, then waits for end of
//! input and stops them all.

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use mmstats::{Counter, FieldDef, Gauge, Layout, Options, Schema, StatsFile, Timer};

fn schema() -> Schema {
    let mut s = Schema::new("bench");
    for i in 0..40 {
        s.push(FieldDef::counter(&format!("bench.c{i:02}")).help("A benchmark counter."));
    }
    for i in 0..8 {
        s.push(FieldDef::gauge(&format!("bench.g{i}")).help("A benchmark gauge."));
    }
    for i in 0..2 {
        s.push(FieldDef::timer(&format!("bench.t{i}"), Layout::timer()).help("A benchmark timer."));
    }
    s
}

fn child(dir: &str, threads: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let dir = dir.to_owned();
            std::thread::spawn(move || {
                let mut f =
                    StatsFile::create(&schema(), &Options::new().dir(&dir)).expect("create");
                for i in 0..40 {
                    let c: Counter = f.take(&format!("bench.c{i:02}")).unwrap();
                    c.add((i * 10 + t) as u64 + 1);
                }
                for i in 0..8 {
                    let g: Gauge = f.take(&format!("bench.g{i}")).unwrap();
                    g.set(i as i64);
                }
                for i in 0..2 {
                    let tm: Timer = f.take(&format!("bench.t{i}")).unwrap();
                    for k in 1..=20u64 {
                        tm.record(Duration::from_micros(k * 37 + i));
                    }
                }
                f
            })
        })
        .collect();
    let files: Vec<StatsFile> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(files);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args[2], args[3].parse().unwrap());
    }
    let (dir, procs, threads) = (&args[1], args[2].parse::<usize>().unwrap(), &args[3]);
    let me = std::env::current_exe().unwrap();
    let mut kids = Vec::new();
    for _ in 0..procs {
        let mut c = Command::new(&me)
            .args(["--child", dir, threads])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        kids.push((c, out_line(&mut out)));
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    for (mut c, _) in kids {
        drop(c.stdin.take());
        let _ = c.wait();
    }
}

fn out_line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s
}
