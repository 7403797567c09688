INSERT INTO menu_items(name, price_cents) VALUES ('Sourdough loaf', 450), ('Croissant', 180), ('Apple tart', 320);
