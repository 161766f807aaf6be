-- FraiseQL nested example (written for `fraiseql generate-views`): three levels of nesting
-- (publisher → authors → books → chapters and tags), a many-to-many (books ↔ tags through
-- tb_book_tag) and an aggregate inside an embedded view (v_author's review statistics sum
-- the reviews of all of the author's books, and v_book embeds v_author: a new review on one
-- book changes every book of that author). Requires nothing but PostgreSQL.

CREATE TABLE tb_publisher (
    pk_publisher bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name         text NOT NULL
);

CREATE TABLE tb_author (
    pk_author    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid   NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_publisher bigint NOT NULL REFERENCES tb_publisher (pk_publisher) ON DELETE CASCADE,
    name         text   NOT NULL,
    tier         text   NOT NULL DEFAULT 'standard'
);
CREATE INDEX tb_author_fk_publisher_idx ON tb_author (fk_publisher);

CREATE TABLE tb_book (
    pk_book      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid          NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_author    bigint        NOT NULL REFERENCES tb_author (pk_author) ON DELETE CASCADE,
    title        text          NOT NULL,
    price        numeric(10,2) NOT NULL DEFAULT 10,
    published_at timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX tb_book_fk_author_idx ON tb_book (fk_author);

CREATE TABLE tb_chapter (
    pk_chapter bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid    NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_book    bigint  NOT NULL REFERENCES tb_book (pk_book) ON DELETE CASCADE,
    number     integer NOT NULL,
    title      text    NOT NULL
);
CREATE INDEX tb_chapter_fk_book_idx ON tb_chapter (fk_book);

CREATE TABLE tb_tag (
    pk_tag bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id     uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    name   text NOT NULL UNIQUE
);

-- The many-to-many: a book has tags, a tag has books.
CREATE TABLE tb_book_tag (
    fk_book bigint NOT NULL REFERENCES tb_book (pk_book) ON DELETE CASCADE,
    fk_tag  bigint NOT NULL REFERENCES tb_tag (pk_tag) ON DELETE CASCADE,
    PRIMARY KEY (fk_book, fk_tag)
);
CREATE INDEX tb_book_tag_fk_tag_idx ON tb_book_tag (fk_tag);

CREATE TABLE tb_review (
    pk_review bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id        uuid    NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_book   bigint  NOT NULL REFERENCES tb_book (pk_book) ON DELETE CASCADE,
    stars     integer NOT NULL CHECK (stars BETWEEN 1 AND 5)
);
CREATE INDEX tb_review_fk_book_idx ON tb_review (fk_book);

-- An author with their publisher and the aggregate over every review of every book.
CREATE VIEW v_author AS
SELECT a.id,
       jsonb_build_object(
           'id', a.id,
           'name', a.name,
           'tier', a.tier,
           'publisher', jsonb_build_object('id', p.id, 'name', p.name),
           'review_count', (SELECT count(*) FROM tb_review r JOIN tb_book b ON b.pk_book = r.fk_book
                             WHERE b.fk_author = a.pk_author),
           'total_stars', (SELECT coalesce(sum(r.stars), 0) FROM tb_review r
                             JOIN tb_book b ON b.pk_book = r.fk_book WHERE b.fk_author = a.pk_author)
       ) AS data
  FROM tb_author a
  JOIN tb_publisher p ON p.pk_publisher = a.fk_publisher;

-- A book embeds its author (v_author, with the aggregate), its tags (many-to-many) and its
-- chapters (by number).
CREATE VIEW v_book AS
SELECT b.id,
       b.price,
       jsonb_build_object(
           'id', b.id,
           'title', b.title,
           'price', b.price,
           'published_at', b.published_at,
           'author', va.data,
           'tags', coalesce((SELECT jsonb_agg(jsonb_build_object('id', t.id, 'name', t.name) ORDER BY t.name)
                               FROM tb_book_tag bt JOIN tb_tag t ON t.pk_tag = bt.fk_tag
                              WHERE bt.fk_book = b.pk_book), '[]'::jsonb),
           'chapters', coalesce((SELECT jsonb_agg(jsonb_build_object('id', c.id, 'number', c.number, 'title', c.title)
                                                  ORDER BY c.number, c.pk_chapter)
                                   FROM tb_chapter c WHERE c.fk_book = b.pk_book), '[]'::jsonb)
       ) AS data
  FROM tb_book b
  JOIN tb_author a ON a.pk_author = b.fk_author
  JOIN v_author va ON va.id = a.id;

-- A publisher with its authors, each with their books (v_book, three levels below).
CREATE VIEW v_publisher AS
SELECT p.id,
       jsonb_build_object(
           'id', p.id,
           'name', p.name,
           'authors', coalesce((
               SELECT jsonb_agg(jsonb_build_object(
                          'id', a.id,
                          'name', a.name,
                          'books', coalesce((SELECT jsonb_agg(vb.data ORDER BY b.title, b.pk_book)
                                               FROM tb_book b JOIN v_book vb ON vb.id = b.id
                                              WHERE b.fk_author = a.pk_author), '[]'::jsonb)
                      ) ORDER BY a.name, a.pk_author)
                 FROM tb_author a WHERE a.fk_publisher = p.pk_publisher), '[]'::jsonb)
       ) AS data
  FROM tb_publisher p;

-- A tag with how many books carry it (the many-to-many seen from the other side).
CREATE VIEW v_tag AS
SELECT t.id,
       jsonb_build_object(
           'id', t.id,
           'name', t.name,
           'book_count', (SELECT count(*) FROM tb_book_tag bt WHERE bt.fk_tag = t.pk_tag)
       ) AS data
  FROM tb_tag t;
