-- Deterministic rows for examples/nested/schema.sql: 5 publishers, 20 authors, 80 books,
-- 240 chapters, 12 tags, ~200 book-tag links, 300 reviews.
INSERT INTO tb_publisher (name) SELECT 'Publisher ' || i FROM generate_series(1, 5) i;
INSERT INTO tb_author (fk_publisher, name, tier)
SELECT 1 + i % 5, 'Author ' || i, CASE WHEN i % 4 = 0 THEN 'gold' ELSE 'standard' END
  FROM generate_series(1, 20) i;
INSERT INTO tb_book (fk_author, title, price, published_at)
SELECT 1 + i % 20, 'Book ' || i, 5 + i % 30, timestamptz '2024-01-01 00:00:00+00' + i * interval '3 days'
  FROM generate_series(1, 80) i;
INSERT INTO tb_chapter (fk_book, number, title)
SELECT 1 + i % 80, 1 + i / 80, 'Chapter ' || i FROM generate_series(0, 239) i;
INSERT INTO tb_tag (name) SELECT 'tag-' || i FROM generate_series(1, 12) i;
INSERT INTO tb_book_tag (fk_book, fk_tag)
SELECT DISTINCT 1 + (i * 7) % 80, 1 + (i * 5) % 12 FROM generate_series(1, 200) i;
INSERT INTO tb_review (fk_book, stars) SELECT 1 + (i * 13) % 80, 1 + i % 5 FROM generate_series(1, 300) i;
