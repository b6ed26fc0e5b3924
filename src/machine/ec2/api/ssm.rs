//! SSM: the parameters that hand a runner's configuration to one instance (`jit-handoff: ssm`).

use super::*;

impl Api {
    /// Writes a runner's JIT config into a new SecureString parameter (the account's default
    /// `aws/ssm` key), tagged so that only the instance `tags` name may read it. Never
    /// overwrites: a parameter of that name is another runner's.
    pub async fn put_jit(
        &self,
        name: &str,
        jit_config: &Secret,
        tags: &[(String, String)],
    ) -> Result<(), MachineError> {
        let tags: Vec<aws_sdk_ssm::types::Tag> = tags
            .iter()
            .filter_map(|(k, v)| {
                aws_sdk_ssm::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .ok()
            })
            .collect();
        self.ssm
            .put_parameter()
            .name(name)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .value(jit_config.expose())
            .description("gpu-runner: a runner's JIT config, for its instance to read once")
            .overwrite(false)
            .set_tags(Some(tags))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| cloud_error("PutParameter", e))
    }

    /// The parameters whose names begin with `prefix`, and when each was last written.
    pub async fn jit_parameters(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, MachineError> {
        let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
            .key("Name")
            .option("BeginsWith")
            .values(prefix)
            .build()
            .map_err(|e| MachineError {
                provider: Kind::Ec2,
                operation: "DescribeParameters",
                code: None,
                message: e.to_string(),
            })?;
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .ssm
                .describe_parameters()
                .parameter_filters(filter.clone())
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| cloud_error("DescribeParameters", e))?;
            for p in out.parameters() {
                let written = p
                    .last_modified_date()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                if let Some(name) = p.name() {
                    found.push((name.to_owned(), written));
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    /// Deletes a JIT config's parameter: `false` when it was gone already.
    pub async fn delete_jit(&self, name: &str) -> Result<bool, MachineError> {
        match self.ssm.delete_parameter().name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = cloud_error("DeleteParameter", e);
                if e.code() == "ParameterNotFound" {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}
