//! Ctrl-C, `kill` and hang-ups: SIGINT, SIGTERM and SIGHUP go to one thread. By default it
//! deletes the temporary files being written and exits with 128 + the signal number, as a
//! shell reports it; completed files are never touched (every write is atomic). A server
//! asks instead to be told (`on_terminate`: drain, then exit; a second signal still exits at
//! once) and to reload on SIGHUP (`on_hangup`).

type Hook = Box<dyn Fn() + Send + Sync>;

static HOOKS: std::sync::Mutex<Vec<Hook>> = std::sync::Mutex::new(Vec::new());
static TERMINATE: std::sync::Mutex<Option<Hook>> = std::sync::Mutex::new(None);
static HANGUP: std::sync::Mutex<Option<Hook>> = std::sync::Mutex::new(None);

/// Run `hook` when the process is interrupted, before it exits (a tracked run is marked
/// KILLED this way).
pub fn on_interrupt(hook: Hook) {
    HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
}

/// On the first SIGINT / SIGTERM call `hook` instead of exiting (a server stops accepting
/// and drains); the next one exits as usual.
pub fn on_terminate(hook: Hook) {
    *TERMINATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
}

/// On SIGHUP call `hook` (a server reloads its model) instead of exiting.
pub fn on_hangup(hook: Hook) {
    *HANGUP.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
}

/// What the signal thread does with `sig`: `true` when a hook took it and the process goes on.
fn handled(sig: libc::c_int) -> bool {
    if sig == libc::SIGHUP {
        if let Some(hook) = &*HANGUP.lock().unwrap_or_else(|e| e.into_inner()) {
            hook();
            return true;
        }
        return false;
    }
    match TERMINATE.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(hook) => {
            hook();
            true
        }
        None => false,
    }
}

/// Block SIGINT, SIGTERM and SIGHUP in this thread and every thread started after it, and
/// handle them on a thread of their own. Call first thing in `main`, before any other thread
/// starts.
pub fn install() {
    // SAFETY: plain libc calls on a zeroed, then filled, signal set owned by this frame.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let spawned = std::thread::Builder::new()
        .name("catbert-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid signal set; `sig` a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if handled(sig) {
                continue;
            }
            crate::fsutil::remove_active_temps();
            let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|e| e.into_inner()));
            for hook in hooks {
                hook();
            }
            eprintln!("interrupted: partial output removed");
            std::process::exit(128 + sig);
        });
    if spawned.is_err() {
        // No handler thread: unblock, so the signals act as they would without us.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}
