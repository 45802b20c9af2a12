//! `mock-llm` binary: serves the mock until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use mock_llm::{serve, MockState};
use tokio::net::TcpListener;

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

const USAGE: &str = "usage: mock-llm [--listen ADDR] [--no-record]

  --listen ADDR   address to listen on (default 127.0.0.1:9000, env MOCK_LLM_LISTEN)
  --no-record     do not keep received requests in memory (for benchmarks)";

#[derive(Debug, PartialEq, Eq)]
struct Options {
    listen: SocketAddr,
    record: bool,
}

/// `Ok(None)` means help was asked for.
fn parse_args(
    args: impl IntoIterator<Item = String>,
    env_listen: Option<String>,
) -> Result<Option<Options>, String> {
    let mut listen = env_listen;
    let mut record = true;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-record" => record = false,
            "--listen" => {
                listen = Some(args.next().ok_or("--listen needs an address")?);
            }
            other => match other.strip_prefix("--listen=") {
                Some(addr) => listen = Some(addr.to_owned()),
                None => return Err(format!("unknown argument `{other}`")),
            },
        }
    }
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = listen
        .parse()
        .map_err(|err| format!("bad listen address `{listen}`: {err}"))?;
    Ok(Some(Options { listen, record }))
}

fn main() -> ExitCode {
    let env_listen = std::env::var("MOCK_LLM_LISTEN")
        .ok()
        .filter(|v| !v.is_empty());
    let options = match parse_args(std::env::args().skip(1), env_listen) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("mock-llm: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mock-llm: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mock-llm: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> std::io::Result<()> {
    let listener = TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(MockState::new());
    state.set_recording(options.record);
    println!("mock-llm listening on http://{addr}");
    tokio::select! {
        () = serve(listener, state) => {}
        result = shutdown_signal() => result?,
    }
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn parse(args: &[&str], env: Option<&str>) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()), env.map(str::to_owned))
    }

    #[test]
    fn defaults() {
        let options = parse(&[], None).unwrap().unwrap();
        assert_eq!(options.listen, "127.0.0.1:9000".parse().unwrap());
        assert!(options.record);
    }

    #[test]
    fn flag_beats_env() {
        let options = parse(
            &["--listen", "0.0.0.0:1", "--no-record"],
            Some("127.0.0.1:2"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(options.listen, "0.0.0.0:1".parse().unwrap());
        assert!(!options.record);
        let options = parse(&["--listen=[::1]:3"], None).unwrap().unwrap();
        assert_eq!(options.listen, "[::1]:3".parse().unwrap());
        let options = parse(&[], Some("127.0.0.1:2")).unwrap().unwrap();
        assert_eq!(options.listen, "127.0.0.1:2".parse().unwrap());
    }

    #[test]
    fn errors_and_help() {
        assert!(parse(&["--listen"], None).is_err());
        assert!(parse(&["--listen", "nope"], None).is_err());
        assert!(parse(&["--bogus"], None).is_err());
        assert_eq!(parse(&["--help"], None), Ok(None));
    }
}
