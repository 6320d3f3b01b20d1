//! The panic hook both servers install: a panic is reported where it
//! happened (file, line, column) and on which thread, through `tracing` at
//! error level, and **never with its payload**. A panic message can quote
//! the input that caused it (an HL7 field, a name, a query value), and
//! nothing from input may reach a log line (no PHI in logs). Without a
//! `tracing` subscriber (a command that sets none up) the same line goes to
//! stderr. A backtrace is added when `RUST_BACKTRACE` asks for one (frames
//! only: code locations, no data).

use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::PanicHookInfo;

/// Replaces the process's panic hook with [`report`].
pub fn install() {
    std::panic::set_hook(Box::new(report));
}

/// Reports one panic: location and thread name, never the payload.
pub fn report(info: &PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "unknown".to_owned());
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = Backtrace::capture();
    let backtrace =
        (backtrace.status() == BacktraceStatus::Captured).then(|| backtrace.to_string());
    let unobserved =
        tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if unobserved {
        eprintln!(
            "internal error: panicked at {location} on thread {thread} (message withheld: it \
             may quote input){}",
            backtrace.map(|b| format!("\n{b}")).unwrap_or_default()
        );
        return;
    }
    match backtrace {
        Some(backtrace) => tracing::error!(
            %location,
            thread,
            %backtrace,
            "panicked (message withheld: it may quote input)"
        ),
        None => tracing::error!(
            %location,
            thread,
            "panicked (message withheld: it may quote input)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_with_its_place_and_thread_never_its_message() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let previous = std::panic::take_hook();
        super::install();
        let line = Arc::new(Mutex::new(0));
        let at = line.clone();
        let joined = std::thread::Builder::new()
            .name("kiosk-worker".into())
            .spawn(move || {
                tracing::subscriber::with_default(subscriber, || {
                    let name = "Smith^Anna PHI-MARKER-7731";
                    *at.lock().unwrap_or_else(|p| p.into_inner()) = line!() + 1;
                    panic!("cannot parse patient {name}");
                })
            })
            .expect("spawn")
            .join();
        std::panic::set_hook(previous);
        assert!(joined.is_err(), "the thread panicked");
        let line = *line.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned();
        assert!(text.contains("ERROR"), "{text}");
        assert!(
            text.contains(&format!("web/src/panic.rs:{line}:")),
            "{text}"
        );
        assert!(text.contains("kiosk-worker"), "{text}");
        assert!(text.contains("message withheld"), "{text}");
        assert!(!text.contains("PHI-MARKER-7731"), "{text}");
        assert!(!text.contains("Smith"), "{text}");
        assert!(!text.contains("cannot parse patient"), "{text}");
    }
}
