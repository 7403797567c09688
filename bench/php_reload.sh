#!/usr/bin/env bash
# In-flight PHP requests across php-fpm reloads (SIGUSR2, what `systemctl reload php8.2-fpm`
# sends): 8 requests of 0.8 s each, a reload 0.3 s into them, 5 times, behind a real nginx, with
# Debian's default process_control_timeout (0: workers killed at once) and with 10s (workers
# finish their requests first). Prints the HTTP statuses each way. Needs nginx, php-fpm, curl.
set -u
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/www" && echo '<?php usleep(800000); echo "done";' > "$T/www/slow.php"
chmod -R a+rX "$T"
FPM_BIN=$(ls /usr/sbin/php-fpm* | head -1)
for PCT in 0 10s; do
  cat > "$T/fpm.conf" <<C
[global]
pid = $T/fpm.pid
error_log = $T/fpm.log
daemonize = no
process_control_timeout = $PCT
[www]
user = www-data
group = www-data
listen = $T/php.sock
listen.mode = 0666
pm = static
pm.max_children = 8
C
  cat > "$T/nginx.conf" <<C
worker_processes 1; daemon off; pid $T/nginx.pid; error_log $T/nginx.err; events {}
http { access_log off; client_body_temp_path $T; proxy_temp_path $T; fastcgi_temp_path $T; uwsgi_temp_path $T; scgi_temp_path $T;
 server { listen 127.0.0.1:18123; root $T/www;
  location ~ \.php$ { include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_pass unix:$T/php.sock; } } }
C
  "$FPM_BIN" -F -y "$T/fpm.conf" 2>/dev/null & FPM=$!
  nginx -c "$T/nginx.conf" 2>/dev/null & NG=$!
  for _ in $(seq 50); do [ -S "$T/php.sock" ] && break; sleep 0.1; done
  : > "$T/codes"
  pids=()
  for _ in 1 2 3 4 5; do
    for _ in $(seq 8); do
      curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:18123/slow.php >> "$T/codes" & pids+=($!)
    done
    sleep 0.3; kill -USR2 "$FPM"; sleep 1.5
  done
  wait "${pids[@]}"
  kill "$NG" "$FPM"; wait "$NG" "$FPM" 2>/dev/null
  echo "process_control_timeout = $PCT: $(sort "$T/codes" | uniq -c | awk '{printf "%s x %s  ", $1, $2}')"
  rm -f "$T/php.sock"
done
