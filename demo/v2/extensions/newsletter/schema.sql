CREATE TABLE newsletter_subscribers(email TEXT PRIMARY KEY);
