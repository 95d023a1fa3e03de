//! The client as a Windows service: installing, removing, starting and stopping it through
//! the service control manager, and running the client under it (`client service run`),
//! stopping gracefully when the manager asks it to stop or the system prepares to shut down.

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{DESCRIPTION, DISPLAY_NAME, SERVICE_NAME, STOP_WAIT_HINT};

// The Win32 error codes the service control manager answers with (winerror.h).
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL: i32 = 1061;
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;
const ERROR_SERVICE_MARKED_FOR_DELETE: i32 = 1072;
const ERROR_SERVICE_EXISTS: i32 = 1073;

/// How long `stop` waits beyond the stop's own hint before it gives up.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often `stop` asks whether the service has stopped.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The delays before the restarts after the first, the second and every later failure.
const RESTART_DELAYS: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
];
/// After a day without a failure the next one counts as the first again.
const FAILURE_RESET: Duration = Duration::from_secs(24 * 60 * 60);
/// The exit code reported when the client panicked (the one Rust gives a panicked process).
const PANIC_EXIT_CODE: u32 = 101;

/// Why a service operation failed: each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "the service control manager denied access; run this from an administrator console (Run as administrator)"
    )]
    AccessDenied,
    #[error(
        "the service {SERVICE_NAME} is not installed; install it with `client service install`"
    )]
    NotInstalled,
    #[error(
        "the service {SERVICE_NAME} is already installed; remove it with `client service uninstall` to install it again"
    )]
    AlreadyInstalled,
    #[error(
        "the service {SERVICE_NAME} is marked for deletion and goes once nothing holds it open; close the Services console and any other program showing it, then try again, or restart Windows"
    )]
    MarkedForDelete,
    #[error(
        "the service {SERVICE_NAME} did not stop within {secs} s; it may still be finishing: check `sc query {SERVICE_NAME}` and its log, then try again"
    )]
    StopTimedOut { secs: u64 },
    #[error(
        "`client service run` is what the service control manager starts; run `client` in a console, or `client service start`"
    )]
    NotStartedByServiceManager,
    #[error("the service control manager failed: {}", detail(.0))]
    Other(windows_service::Error),
}

impl From<windows_service::Error> for ServiceError {
    fn from(error: windows_service::Error) -> Self {
        match os_error(&error) {
            Some(ERROR_ACCESS_DENIED) => Self::AccessDenied,
            Some(ERROR_SERVICE_DOES_NOT_EXIST) => Self::NotInstalled,
            Some(ERROR_SERVICE_EXISTS) => Self::AlreadyInstalled,
            Some(ERROR_SERVICE_MARKED_FOR_DELETE) => Self::MarkedForDelete,
            Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => Self::NotStartedByServiceManager,
            _ => Self::Other(error),
        }
    }
}

/// The Win32 error code behind `error`, if a Windows call failed.
fn os_error(error: &windows_service::Error) -> Option<i32> {
    match error {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// What went wrong, in Windows' words: the crate's own message for a failed call names no cause.
fn detail(error: &windows_service::Error) -> String {
    match error {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => match std::error::Error::source(other) {
            Some(cause) => format!("{other}: {cause}"),
            None => other.to_string(),
        },
    }
}

/// Installs the service: started automatically at boot, run as LocalSystem, launching
/// `<exe> service run --config <config> --log-file <log_file>`; it restarts after 10 s, 60 s
/// and 5 min when it fails, crashed or exited with an error (the count reset after a day).
pub fn install(exe: &Path, config: &Path, log_file: &Path) -> Result<(), ServiceError> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: absolute(exe),
        launch_arguments: vec![
            OsString::from("service"),
            OsString::from("run"),
            OsString::from("--config"),
            absolute(config).into_os_string(),
            OsString::from("--log-file"),
            absolute(log_file).into_os_string(),
        ],
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    // Failure actions that restart the service need START as well as CHANGE_CONFIG.
    let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::DELETE;
    let service = manager.create_service(&info, access)?;
    if let Err(error) = configure(&service) {
        // Half set up it would not restart after a failure: remove it again; the error that
        // stopped the installation is the one to report.
        let _ = service.delete();
        return Err(error.into());
    }
    Ok(())
}

/// `path` made absolute: the service starts in the system folder, not in this one.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Gives the new service its description, pre-shutdown timeout and failure actions.
fn configure(service: &Service) -> windows_service::Result<()> {
    service.set_description(DESCRIPTION)?;
    service.set_preshutdown_timeout(STOP_WAIT_HINT)?;
    let restarts = RESTART_DELAYS
        .iter()
        .map(|&delay| ServiceAction {
            action_type: ServiceActionType::Restart,
            delay,
        })
        .collect();
    service.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET),
        reboot_msg: None,
        command: None,
        actions: Some(restarts),
    })?;
    // Also when the client stops on an error and reports it, not only when it crashes.
    service.set_failure_actions_on_non_crash_failures(true)
}

/// Stops the service if it is running (waiting, bounded), then deletes it.
pub fn uninstall() -> Result<(), ServiceError> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    stop_and_wait(&service)?;
    match service.delete() {
        // Already on its way out: it goes once the last handle to it is closed.
        Err(error) if os_error(&error) == Some(ERROR_SERVICE_MARKED_FOR_DELETE) => Ok(()),
        result => result.map_err(ServiceError::from),
    }
}

/// Starts the installed service; one already running is fine.
pub fn start() -> Result<(), ServiceError> {
    let service = open(ServiceAccess::START)?;
    match service.start::<&str>(&[]) {
        Err(error) if os_error(&error) == Some(ERROR_SERVICE_ALREADY_RUNNING) => Ok(()),
        result => result.map_err(ServiceError::from),
    }
}

/// Asks the service to stop and waits until it has, up to `STOP_WAIT_HINT` + 15 s; one not
/// running is fine.
pub fn stop() -> Result<(), ServiceError> {
    stop_and_wait(&open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?)
}

/// Opens the installed service with `access`.
fn open(access: ServiceAccess) -> Result<Service, ServiceError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)?;
    manager
        .open_service(SERVICE_NAME, access)
        .map_err(ServiceError::from)
}

/// Asks `service` to stop unless it is stopped or stopping, then polls until it is stopped
/// or the deadline passes. One still starting cannot take the request yet: it is asked again.
fn stop_and_wait(service: &Service) -> Result<(), ServiceError> {
    let limit = STOP_WAIT_HINT + STOP_GRACE;
    let deadline = Instant::now() + limit;
    let mut asked = false;
    loop {
        match service.query_status()?.current_state {
            ServiceState::Stopped => return Ok(()),
            ServiceState::StopPending => {}
            _ if !asked => match service.stop() {
                Ok(_) => asked = true,
                Err(error) => match os_error(&error) {
                    Some(ERROR_SERVICE_NOT_ACTIVE) => return Ok(()),
                    Some(ERROR_SERVICE_CANNOT_ACCEPT_CTRL) => {}
                    _ => return Err(error.into()),
                },
            },
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::StopTimedOut {
                secs: limit.as_secs(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// What the service runs: the client until the token is cancelled; returns the process exit
/// code (0 = clean stop).
pub type Body = Box<dyn FnOnce(CancellationToken) -> u32 + Send>;

/// The body `run` hands to `service_main`, which the dispatcher calls on a thread of its own.
static BODY: Mutex<Option<Body>> = Mutex::new(None);
/// The service's status handle, for the control handler to report the stop with.
static STATUS: OnceLock<ServiceStatusHandle> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Runs `body` as the service, under the service control manager (what `client service run`,
/// launched by the manager, calls); returns once the service has stopped. Fails at once when
/// the process was not started by the service control manager.
pub fn run(body: Body) -> Result<(), ServiceError> {
    *BODY.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)?;
    Ok(())
}

/// The service's entry point, called by the dispatcher once the manager has started it.
fn service_main(_arguments: Vec<OsString>) {
    let body = BODY.lock().unwrap_or_else(PoisonError::into_inner).take();
    let Some(body) = body else {
        tracing::error!("the service started a second time in one process; nothing to run");
        return;
    };
    if let Err(error) = serve(body) {
        tracing::error!(
            error = %ServiceError::from(error),
            "cannot report the service's state to the service control manager"
        );
    }
}

/// Reports the service running, runs `body` until it returns (a stop or shutdown cancels its
/// token), then reports the service stopped with the body's exit code.
fn serve(body: Body) -> windows_service::Result<()> {
    let token = CancellationToken::new();
    let stop = token.clone();
    // windows-service releases this handler after a stop or shutdown control; the stop
    // pending status reported here accepts no controls, so none follows it.
    let handler = move |control: ServiceControl| -> ServiceControlHandlerResult {
        match control {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                // Stopping in the manager's eyes before the body can report stopped.
                if let Some(status) = STATUS.get() {
                    let stopping = ServiceStatus {
                        checkpoint: 1,
                        wait_hint: STOP_WAIT_HINT,
                        ..state(ServiceState::StopPending)
                    };
                    if let Err(error) = status.set_service_status(stopping) {
                        tracing::error!(
                            error = %ServiceError::from(error),
                            "cannot report the service stopping"
                        );
                    }
                }
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let registered = service_control_handler::register(SERVICE_NAME, handler)?;
    let status = *STATUS.get_or_init(|| registered);
    let running = ServiceStatus {
        // Pre-shutdown rather than shutdown: it is what waits the pre-shutdown timeout.
        controls_accepted: ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN,
        ..state(ServiceState::Running)
    };
    if let Err(error) = status.set_service_status(running) {
        // Rather than stay "starting" for ever: stopped, with an error.
        let _ = status.set_service_status(stopped(1));
        return Err(error);
    }
    let code =
        std::panic::catch_unwind(AssertUnwindSafe(move || body(token))).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            tracing::error!(panic = what, "the client panicked");
            PANIC_EXIT_CODE
        });
    status.set_service_status(stopped(code))
}

/// A status in `current_state` that accepts no controls and reports no error.
fn state(current_state: ServiceState) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state,
        controls_accepted: ServiceControlAccept::empty(),
        exit_code: ServiceExitCode::Win32(0),
        checkpoint: 0,
        wait_hint: Duration::ZERO,
        process_id: None,
    }
}

/// The stopped status for the body's exit `code`: 0 is a clean stop; any other is a failure,
/// which the failure actions answer with a restart.
fn stopped(code: u32) -> ServiceStatus {
    let exit_code = if code == 0 {
        ServiceExitCode::Win32(0)
    } else {
        ServiceExitCode::ServiceSpecific(code)
    };
    ServiceStatus {
        exit_code,
        ..state(ServiceState::Stopped)
    }
}
