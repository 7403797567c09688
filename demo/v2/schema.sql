CREATE TABLE pages(id INTEGER PRIMARY KEY, slug TEXT NOT NULL, title TEXT, updated_at TEXT);
CREATE TABLE menu_items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL DEFAULT 0);
CREATE INDEX pages_slug ON pages(slug);
