#!/bin/sh
# A container of the try-out cluster (compose.yaml): munge, then its role in the foreground.
#   start.sh slurmctld | slurmdbd | node <name> | hub
set -eu
# The site's slurm.conf where every Slurm command looks for it (slurmdbd.conf goes beside it).
mkdir -p /etc/slurm /run/munge /var/spool/slurmd /var/spool/slurmctld /var/log/academy
cp /srv/academy/docker/compose/slurm.conf /etc/slurm/slurm.conf
chown munge:munge /run/munge
runuser -u munge -- munged
role=${1:?role: slurmctld, slurmdbd, node NAME or hub}
case "$role" in
  slurmdbd)
    # slurmdbd.conf wants the database password in the file: written here from the secret, root only.
    umask 077
    sed "s|@DB_PASSWORD@|$(cat /run/secrets/mariadb_password)|" /srv/academy/docker/compose/slurmdbd.conf \
      > /etc/slurm/slurmdbd.conf
    exec slurmdbd -D -s
    ;;
  slurmctld)
    exec slurmctld -D -i
    ;;
  node)
    exec slurmd -D -N "${2:?node name}"
    ;;
  hub)
    umask 077
    mkdir -p /etc/academy/config.d
    cp /srv/academy/docker/compose/academy.yaml /etc/academy/config.yaml
    pw=$(cat /run/secrets/postgres_password)
    printf 'hub:\n  db_url: postgresql+psycopg://academy:%s@postgres/jupyterhub\nassessments:\n  database: postgresql+psycopg://academy:%s@postgres/gradebook\nprogress:\n  database: postgresql+psycopg://academy:%s@postgres/progress\n' \
      "$pw" "$pw" "$pw" > /etc/academy/config.d/10-secrets.yaml
    exec /opt/academy/venv-hub/bin/jupyterhub -f /srv/academy/hub/jupyterhub_config.py
    ;;
  *)
    echo "start.sh: unknown role '$role' (accepted: slurmctld, slurmdbd, node NAME, hub)" >&2
    exit 2
    ;;
esac
