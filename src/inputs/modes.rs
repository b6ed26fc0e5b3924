//! The inputs of `mode: stop`, `mode: cleanup`, `mode: retry` and `machine: attached`.

use super::*;

impl Reader<'_> {
    /// `mode: start` with `machine: attached`: the labels to wait for are required.
    pub(super) fn attached(&mut self, common: Option<Common>) -> Option<AttachedInputs> {
        let labels = self.list(&spec::LABELS, 100, values::label);
        if labels.is_empty() && self.raw(&spec::LABELS).is_none() {
            self.missing(
                &spec::LABELS,
                "With machine: attached, name the labels the machine was attached with \
                 (gpu-runner attach --labels gpu-a10 → labels: gpu-a10): start waits until a \
                 machine with all of them is online and idle."
                    .to_owned(),
            );
        }
        let timeout = self.number(&spec::STARTUP_TIMEOUT_MINUTES, 1, 120, "minutes");
        let trust = self.trust();
        if !self.errors.is_empty() {
            return None;
        }
        Some(AttachedInputs {
            common: common?,
            labels,
            timeout_minutes: timeout?,
            trust,
        })
    }

    /// What a start for an attached machine does not read: everything about launching one.
    pub(super) fn unused_when_attached(&self) -> Vec<String> {
        let read = [
            spec::MODE.name,
            spec::MACHINE.name,
            spec::GITHUB_TOKEN.name,
            spec::GITHUB_APP_ID.name,
            spec::GITHUB_APP_PRIVATE_KEY.name,
            spec::RUNNER_SCOPE.name,
            spec::LABELS.name,
            spec::STARTUP_TIMEOUT_MINUTES.name,
            spec::ALLOWED_ASSOCIATIONS.name,
            spec::ALLOW_UNTRUSTED.name,
            spec::ON_UNTRUSTED.name,
        ];
        spec::ALL
            .iter()
            .filter(|s| !read.contains(&s.name))
            .filter(|s| self.raw(s).is_some_and(|v| v != s.default))
            .map(|s| {
                format!(
                    "{} has no effect with machine: attached: the machine is yours, and \
                     gpu-runner attach sets it up.",
                    s.name
                )
            })
            .collect()
    }

    pub(super) fn retry(
        &mut self,
        common: Option<Common>,
        kubernetes: bool,
    ) -> Option<RetryInputs> {
        if kubernetes {
            // A pod's conditions, which say its node was taken away, go with the pod, and stop
            // deletes it: by the time the run has ended there is nothing left to read.
            self.fail(
                &spec::MODE,
                Some("retry"),
                Problem::Conflict {
                    other: spec::MACHINE.name,
                    fix: "mode: retry re-runs runs whose EC2 spot instance AWS took back; with \
                          machine: kubernetes, stop says when a pod was taken off its node, and \
                          the run is re-run by hand. Leave machine out of the retry step.",
                },
            );
            return None;
        }
        let region = self.required_region("the run's instances were in");
        let max_retries = self.number(&spec::MAX_RETRIES, 0, 5, "re-runs");
        if !self.errors.is_empty() {
            return None;
        }
        Some(RetryInputs {
            common: common?,
            region: region?,
            max_retries: max_retries?,
        })
    }

    pub(super) fn cleanup(
        &mut self,
        common: Option<Common>,
        kubernetes: bool,
    ) -> Option<CleanupInputs> {
        let region = if kubernetes {
            Some(self.aws_region().ok().flatten().unwrap_or_default())
        } else {
            self.required_region("to clean up")
        };
        let max_age = self.number(&spec::MAX_AGE_MINUTES, 10, 10080, "minutes");
        let queued = self.number(&spec::QUEUED_TIMEOUT_MINUTES, 5, 1440, "minutes");
        let dry_run = self.boolean(&spec::DRY_RUN);
        if !self.errors.is_empty() {
            return None;
        }
        Some(CleanupInputs {
            common: common?,
            region: region?,
            max_age_minutes: max_age?,
            queued_timeout_minutes: queued?,
            dry_run,
        })
    }

    pub(super) fn stop(&mut self, common: Option<Common>, kubernetes: bool) -> Option<StopInputs> {
        let region = match self.one(&spec::REGION, values::region) {
            Some(region) => Some(region),
            None if self.raw(&spec::REGION).is_some() => None,
            None => self.aws_region().ok().flatten(),
        };
        let label = self.one(&spec::LABEL, values::label);
        let ids_spec = &spec::INSTANCE_IDS;
        let instance_ids = match self.value(ids_spec) {
            None => Vec::new(),
            Some(v) => match values::instance_ids(&v) {
                Ok(mut ids) => {
                    // A repeated id is harmless to stop: drop it rather than fail the teardown.
                    let mut seen = std::collections::HashSet::new();
                    ids.retain(|id| seen.insert(id.clone()));
                    let check = if kubernetes {
                        values::pod_name
                    } else {
                        values::instance_id
                    };
                    self.entries(ids_spec, &v, ids, 100, check)
                }
                Err(e) => {
                    self.invalid(ids_spec, &v, None, e);
                    Vec::new()
                }
            },
        };
        let has_work = label.is_some() || !instance_ids.is_empty();
        if has_work && region.is_none() && !kubernetes && self.errors.is_empty() {
            self.missing(
                &spec::REGION,
                "Pass the start job's region output (region: ${{ needs.start.outputs.region }}), \
                 or set aws-region or AWS_REGION."
                    .to_owned(),
            );
        }
        if !self.errors.is_empty() {
            return None;
        }
        // A pod's place is its cluster, which every mode is told: no region to pass on.
        let region = if kubernetes {
            Some(region.unwrap_or_default())
        } else {
            region
        };
        Some(StopInputs {
            common: common?,
            region,
            label,
            instance_ids,
        })
    }
}
