//! The web server's lines for an instance (`upkeep web-config nginx|apache`): a server in
//! front of a PHP site (php-fpm) that honours the gate for every request it answers, PHP
//! included, never serves upkeep's files, backups, hidden files or PHP source, and passes
//! `/control` to the panel with the browser's host and port. The README shows the same lines;
//! tests run them in real servers.

use std::path::Path;

/// What the lines are made for.
pub struct WebConfig<'a> {
    /// The instance root (the document root).
    pub root: &'a Path,
    /// The site's name (`server_name`, `ServerName`).
    pub server_name: &'a str,
    /// The port the server listens on.
    pub port: u16,
    /// php-fpm's socket (`/run/php/php8.2-fpm.sock` on Debian 12).
    pub php_fpm: &'a str,
    /// Where `upkeep serve` listens (the panel).
    pub panel: &'a str,
}

/// Paths never served, as one regular expression on the request's path: upkeep's folders and
/// files, backups and done-marks, extension manifests, hidden files (`.git`, `.env`,
/// `.htaccess`) and PHP's other source files (`.inc`, `.phps`, `.phtml`, `.php5`...).
const NEVER: &str = r"(^/(staging|inbox|run_once|\.upkeep)(/|$)|^/upkeep\.toml$|\.bak$|\.done$|/extension\.toml$|/\.|\.(inc|phps|phtml|php[0-9])$)";

/// nginx with php-fpm.
pub fn nginx(c: &WebConfig) -> String {
    let root = c.root.display();
    let (name, port, fpm, panel) = (c.server_name, c.port, c.php_fpm, c.panel);
    format!(
        r#"server {{
    listen {port};
    server_name {name};
    root {root};
    index index.php index.html;

    # upkeep's own files, backups, hidden files and PHP source are never served
    location ~ {NEVER} {{
        return 404;
    }}
    # the control panel stays reachable while the site is closed
    location ^~ /control {{
        proxy_pass http://{panel};
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-For $remote_addr;
        client_max_body_size 2g;
    }}
    # the gate covers every request below, PHP included
    set $upkeep_gate "";
    if (-f $document_root/.upkeep/gate-closed) {{
        set $upkeep_gate closed;
    }}
    location / {{
        if ($upkeep_gate) {{ return 503; }}
        try_files $uri $uri/ /index.php?$args;
    }}
    location ~ \.php$ {{
        if ($upkeep_gate) {{ return 503; }}
        try_files $uri =404;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
        fastcgi_pass unix:{fpm};
    }}
    error_page 503 @maintenance;
    location @maintenance {{
        root {root}/.upkeep;
        rewrite ^ /maintenance.html break;
        add_header Retry-After 120 always;
        add_header Cache-Control no-store always;
    }}
}}
"#
    )
}

/// Apache 2.4 with php-fpm (proxy_fcgi); modules rewrite, proxy, proxy_fcgi, proxy_http,
/// headers.
pub fn apache(c: &WebConfig) -> String {
    let root = c.root.display();
    let (name, port, fpm, panel) = (c.server_name, c.port, c.php_fpm, c.panel);
    format!(
        r#"<VirtualHost *:{port}>
    ServerName {name}
    DocumentRoot {root}
    DirectoryIndex index.php index.html
    <Directory {root}>
        Require all granted
        AllowOverride All
    </Directory>
    RewriteEngine On
    # upkeep's own files, backups, hidden files and PHP source are never served
    RewriteRule "{NEVER}" - [R=404,L]
    # the gate covers every request but the panel's, PHP included
    RewriteCond %{{REQUEST_URI}} !^/control(/|$)
    RewriteCond %{{REQUEST_URI}} !^/upkeep-maintenance\.html$
    RewriteCond {root}/.upkeep/gate-closed -f
    RewriteRule ^ - [R=503,L]
    Alias /upkeep-maintenance.html {root}/.upkeep/maintenance.html
    ErrorDocument 503 /upkeep-maintenance.html
    Header always set Retry-After "120" "expr=%{{REQUEST_STATUS}} == 503"
    Header always set Cache-Control "no-store" "expr=%{{REQUEST_STATUS}} == 503"
    <FilesMatch "\.php$">
        SetHandler "proxy:unix:{fpm}|fcgi://localhost"
    </FilesMatch>
    # the control panel, with the browser's host and port
    ProxyPreserveHost On
    ProxyPass /control http://{panel}/control
</VirtualHost>
"#
    )
}
