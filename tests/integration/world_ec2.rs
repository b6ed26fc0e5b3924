//! The world behaves as EC2 does across stopping and starting, which warm pools will rely on and
//! moto does not model: an instance is `stopping` for a while before it is `stopped`, can be
//! started and given new user data only once stopped, keeps its disk and loses its processes,
//! runs its user data again at a later boot only when cloud-init is told to (a MIME multi-part
//! user data whose cloud-config runs `scripts-user` always), and a shutdown from inside stops
//! or terminates it as its shutdown behaviour says.

use std::time::Duration;

use world::{Options, World};

/// A boot script that records its boot on the disk, says so on the console, and leaves a
/// process running that ticks into a file.
fn script(tag: &str) -> String {
    format!(
        "#!/bin/bash\n\
         mkdir -p /var/cache/world\n\
         echo {tag} >> /var/cache/world/boots\n\
         echo 'world: booted {tag}'\n\
         ( while :; do echo tick >> /var/cache/world/ticks; /usr/bin/sleep 0.2; done ) \
         > /dev/null 2>&1 &\n"
    )
}

/// `script` as AWS documents running user data at every boot: a MIME multi-part message whose
/// cloud-config runs user scripts always.
fn every_boot(script: &str) -> String {
    format!(
        "Content-Type: multipart/mixed; boundary=\"//\"\n\
         MIME-Version: 1.0\n\
         \n\
         --//\n\
         Content-Type: text/cloud-config; charset=\"us-ascii\"\n\
         \n\
         #cloud-config\n\
         cloud_final_modules:\n\
         - [scripts-user, always]\n\
         \n\
         --//\n\
         Content-Type: text/x-shellscript; charset=\"us-ascii\"\n\
         \n\
         {script}\n\
         --//--\n"
    )
}

fn booted(world: &World, id: &str, tag: &str) -> bool {
    world.wait_until(Duration::from_secs(20), |w| {
        w.console(id).contains(&format!("world: booted {tag}"))
    })
}

fn stopped(world: &World, id: &str) -> bool {
    world.wait_until(Duration::from_secs(20), |w| {
        w.state_of(id).as_deref() == Some("stopped")
    })
}

#[test]
fn a_stopped_instance_keeps_its_disk_loses_its_processes_and_runs_new_user_data_when_told() {
    let world = World::start(Options::default()).unwrap();
    let id = world.launch_with(&every_boot(&script("first")), "stop");
    assert!(booted(&world, &id, "first"), "{}", world.console(&id));
    let refused = Err("IncorrectInstanceState".to_owned());
    assert_eq!(
        world.set_user_data(&id, "#!/bin/bash\n"),
        refused,
        "user data changes only while stopped"
    );

    world.stop_instance(&id).unwrap();
    assert_eq!(world.state_of(&id).as_deref(), Some("stopping"));
    assert_eq!(world.start_instance(&id), refused, "not while stopping");
    assert_eq!(world.set_user_data(&id, "#!/bin/bash\n"), refused);
    assert!(stopped(&world, &id));
    // Its processes are gone: nothing ticks any more.
    let ticks = || {
        world
            .instance_file(&id, "var/cache/world/ticks")
            .unwrap_or_default()
            .len()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        ticks(),
        before,
        "a process of the stopped instance still runs"
    );

    world
        .set_user_data(&id, &every_boot(&script("second")))
        .unwrap();
    world.start_instance(&id).unwrap();
    assert!(booted(&world, &id, "second"), "{}", world.console(&id));
    assert_eq!(
        world.instance_file(&id, "var/cache/world/boots").as_deref(),
        Some("first\nsecond\n"),
        "the disk is kept"
    );
}

#[test]
fn a_plain_script_runs_at_the_first_boot_only() {
    let world = World::start(Options::default()).unwrap();
    let id = world.launch_with(&script("once"), "stop");
    assert!(booted(&world, &id, "once"));
    world.stop_instance(&id).unwrap();
    assert!(stopped(&world, &id));
    world.start_instance(&id).unwrap();
    assert!(world.wait_until(Duration::from_secs(20), |w| {
        w.instance_log()
            .iter()
            .any(|l| l.contains("cloud-init ran its user data at the first boot only"))
    }));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        world.instance_file(&id, "var/cache/world/boots").as_deref(),
        Some("once\n")
    );
}

#[test]
fn a_shutdown_from_inside_stops_or_terminates_as_the_instance_says() {
    let world = World::start(Options::default()).unwrap();
    let halt = "#!/bin/bash\nshutdown -h now\n";
    let stops = world.launch_with(halt, "stop");
    let ends = world.launch_with(halt, "terminate");
    assert!(stopped(&world, &stops), "{:?}", world.state_of(&stops));
    assert!(world.wait_until(Duration::from_secs(20), |w| {
        w.state_of(&ends).as_deref() == Some("terminated")
    }));
}
