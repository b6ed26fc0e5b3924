//! The stand-in runner package: a real `.tar.gz` with the runner's entry points, served by the
//! world with its SHA-256, so that the boot script's download and hash check run for real.

use sha2::{Digest, Sha256};

pub const VERSION: &str = "2.999.0";

pub struct Package {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

fn add(builder: &mut tar::Builder<&mut Vec<u8>>, path: &str, mode: u32, text: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(mode);
    header.set_cksum();
    builder
        .append_data(&mut header, path, text.as_bytes())
        .expect("writing to memory");
}

pub fn build() -> Package {
    let mut tarball = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tarball);
        // The layout of actions/runner's package: run.sh, its helper template, the listener and
        // the worker it starts for each job.
        for (path, text) in [
            ("run.sh", include_str!("standins/run.sh")),
            (
                "run-helper.sh.template",
                include_str!("standins/run-helper.sh.template"),
            ),
            (
                "bin/Runner.Listener",
                include_str!("standins/Runner.Listener"),
            ),
            ("bin/Runner.Worker", include_str!("standins/Runner.Worker")),
            (
                "config.sh",
                "#!/bin/bash\necho 'config.sh: not needed with --jitconfig'\n",
            ),
        ] {
            add(&mut builder, path, 0o755, text);
        }
        builder.finish().expect("writing to memory");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tarball).expect("writing to memory");
    let bytes = gz.finish().expect("writing to memory");
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    Package { bytes, sha256 }
}
