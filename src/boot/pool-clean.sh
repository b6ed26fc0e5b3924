# Pool instances only, in place of the boot script's `# @POOL_CLEAN@`: the disk is the last job's,
# and nothing of that job may reach this one but the cache folder. What the runner user left goes
# (its home with its systemd user units, its crontab, lingering, files in /tmp and the other
# folders anyone may write in), then the user itself, which step 3 makes anew; Docker's
# containers and volumes go too; the runner is unpacked afresh from root's own copy of the checked
# package (step 4). A job that was root (runner-sudo) can leave anything: the README says
# so, and such a member never serves a start without sudo (its launch settings differ).
CURRENT_PHASE=clean
if [ "$RUNNER_USER" != root ] && id -u "$RUNNER_USER" > /dev/null 2>&1; then
  pkill -KILL -u "$RUNNER_USER" || true
  # Without root, a user writes in its home and the folders anyone may write in: those are
  # searched (the whole disk would take minutes); the home goes with the user.
  find /tmp /var/tmp /dev/shm /var/crash /run/lock /var/spool /var/mail -xdev \
    -user "$RUNNER_USER" -print0 2> /dev/null | xargs -0 -r rm -rf -- || true
  rm -rf "/run/user/$(id -u "$RUNNER_USER")" "/var/lib/systemd/linger/$RUNNER_USER"
  userdel --force --remove "$RUNNER_USER" > /dev/null 2>&1 || true
fi
# Images stay: they are what a warm start saves, and only a job with sudo (the docker group is
# given with it alone) could have changed them, on a member that serves only starts with sudo.
if command -v docker > /dev/null 2>&1; then
  docker ps --all --quiet 2> /dev/null | xargs -r docker rm --force --volumes > /dev/null 2>&1 || true
  docker volume prune --all --force > /dev/null 2>&1 || true
fi
rm -rf "$RUNNER_DIR"
log clean "status=ok kept=$CACHE_DIR"
