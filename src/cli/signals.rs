//! Ctrl-C and `kill`: SIGINT and SIGTERM go to one thread that deletes the temporary files
//! being written and exits with 128 + the signal number, as a shell reports it. Completed
//! files are never touched (every write is atomic).

type Hook = Box<dyn Fn() + Send + Sync>;

static HOOKS: std::sync::Mutex<Vec<Hook>> = std::sync::Mutex::new(Vec::new());

/// Run `hook` when the process is interrupted, before it exits (a tracked run is marked
/// KILLED this way).
pub fn on_interrupt(hook: Hook) {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
}

/// Block SIGINT and SIGTERM in this thread and every thread started after it, and handle them
/// on a thread of their own. Call first thing in `main`, before any other thread starts.
pub fn install() {
    // SAFETY: plain libc calls on a zeroed, then filled, signal set owned by this frame.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("catbert-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; `sig` a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                crate::fsutil::remove_active_temps();
                let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
                for hook in hooks {
                    hook();
                }
                eprintln!("interrupted: partial output removed");
                std::process::exit(128 + sig);
            }
        });
    if spawned.is_err() {
        // No handler thread: unblock, so the signals act as they would without us.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}
