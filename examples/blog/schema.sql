-- FraiseQL blog example: write tables (tb_), read views (v_) with `id` and `data jsonb`
-- (snake_case keys, nested objects and lists embedded), mutations (fn_) returning
-- fraiseql.mutation_response, and change tracking for writes made outside the API.
-- Requires the fraiseql core objects (`fraiseql db init`).

CREATE TABLE tb_user (
    pk_user    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    identifier text        NOT NULL UNIQUE,
    name       text        NOT NULL,
    email      text,
    role       text        NOT NULL DEFAULT 'reader' CHECK (role IN ('admin', 'author', 'reader')),
    score      bigint      NOT NULL DEFAULT 0,
    metadata   jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tb_post (
    pk_post    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_user    bigint      NOT NULL REFERENCES tb_user (pk_user) ON DELETE CASCADE,
    title      text        NOT NULL,
    body       text        NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    views      integer     NOT NULL DEFAULT 0,
    rating     double precision,
    tags       text[]      NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tb_post_fk_user_idx ON tb_post (fk_user);

CREATE TABLE tb_comment (
    pk_comment bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    fk_post    bigint      NOT NULL REFERENCES tb_post (pk_post) ON DELETE CASCADE,
    fk_user    bigint      NOT NULL REFERENCES tb_user (pk_user) ON DELETE CASCADE,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tb_comment_fk_post_idx ON tb_comment (fk_post);

CREATE VIEW v_comment AS
SELECT c.id,
       jsonb_build_object(
           'id', c.id,
           'body', c.body,
           'created_at', c.created_at,
           'author', jsonb_build_object('id', u.id, 'identifier', u.identifier, 'name', u.name)
       ) AS data
  FROM tb_comment c
  JOIN tb_user u ON u.pk_user = c.fk_user;

CREATE VIEW v_post AS
SELECT p.id,
       jsonb_build_object(
           'id', p.id,
           'title', p.title,
           'body', p.body,
           'published', p.published,
           'views', p.views,
           'rating', p.rating,
           'tags', to_jsonb(p.tags),
           'created_at', p.created_at,
           'author', jsonb_build_object('id', u.id, 'identifier', u.identifier, 'name', u.name),
           'comments', coalesce((
               SELECT jsonb_agg(jsonb_build_object(
                          'id', c.id,
                          'body', c.body,
                          'created_at', c.created_at,
                          'author', jsonb_build_object('id', cu.id, 'identifier', cu.identifier, 'name', cu.name)
                      ) ORDER BY c.created_at, c.pk_comment)
                 FROM tb_comment c
                 JOIN tb_user cu ON cu.pk_user = c.fk_user
                WHERE c.fk_post = p.pk_post), '[]'::jsonb)
       ) AS data
  FROM tb_post p
  JOIN tb_user u ON u.pk_user = p.fk_user;

CREATE VIEW v_user AS
SELECT u.id,
       jsonb_build_object(
           'id', u.id,
           'identifier', u.identifier,
           'name', u.name,
           'email', u.email,
           'role', u.role,
           'score', u.score,
           'metadata', u.metadata,
           'created_at', u.created_at,
           'posts', coalesce((
               SELECT jsonb_agg(vp.data ORDER BY tp.created_at, tp.pk_post)
                 FROM tb_post tp
                 JOIN v_post vp ON vp.id = tp.id
                WHERE tp.fk_user = u.pk_user), '[]'::jsonb)
       ) AS data
  FROM tb_user u;

-- createPost(input: CreatePostInput!): the whole input as jsonb (snake_case keys).
-- Inserts first and checks for a duplicate title afterwards, so that a failure after a
-- write shows the API's rollback.
CREATE FUNCTION fn_create_post(input jsonb) RETURNS fraiseql.mutation_response
LANGUAGE plpgsql AS $$
DECLARE
    v_author tb_user;
    v_id     uuid;
BEGIN
    SELECT * INTO v_author FROM tb_user WHERE id = (input ->> 'author_id')::uuid;
    IF NOT FOUND THEN
        RETURN fraiseql.mutation_err('NOT_FOUND', 'no author with this id');
    END IF;
    IF coalesce(length(btrim(input ->> 'title')), 0) = 0 THEN
        RETURN fraiseql.mutation_err('VALIDATION_ERROR', 'title must not be empty');
    END IF;
    INSERT INTO tb_post (fk_user, title, body, published, rating, tags)
    VALUES (v_author.pk_user, input ->> 'title', input ->> 'body',
            coalesce((input ->> 'published')::boolean, false),
            (input ->> 'rating')::double precision,
            coalesce(ARRAY(SELECT jsonb_array_elements_text(input -> 'tags')), '{}'))
    RETURNING id INTO v_id;
    IF (SELECT count(*) FROM tb_post WHERE fk_user = v_author.pk_user AND title = input ->> 'title') > 1 THEN
        RETURN fraiseql.mutation_err('CONFLICT', 'this author already has a post with this title');
    END IF;
    RETURN fraiseql.mutation_ok(v_id, 'Post', (SELECT data FROM v_post WHERE id = v_id), true,
                                'post created', ARRAY['title', 'body', 'published', 'rating', 'tags']);
END;
$$;

-- updatePost(input: UpdatePostInput!): only the given fields change.
CREATE FUNCTION fn_update_post(input jsonb) RETURNS fraiseql.mutation_response
LANGUAGE plpgsql AS $$
DECLARE
    v_old     tb_post;
    v_changed text[] := '{}';
BEGIN
    SELECT * INTO v_old FROM tb_post WHERE id = (input ->> 'id')::uuid;
    IF NOT FOUND THEN
        RETURN fraiseql.mutation_err('NOT_FOUND', 'no post with this id');
    END IF;
    IF input ? 'title' AND input ->> 'title' IS DISTINCT FROM v_old.title THEN
        v_changed := array_append(v_changed, 'title');
    END IF;
    IF input ? 'body' AND input ->> 'body' IS DISTINCT FROM v_old.body THEN
        v_changed := array_append(v_changed, 'body');
    END IF;
    IF input ? 'published' AND (input ->> 'published')::boolean IS DISTINCT FROM v_old.published THEN
        v_changed := array_append(v_changed, 'published');
    END IF;
    IF cardinality(v_changed) = 0 THEN
        RETURN fraiseql.mutation_ok(v_old.id, 'Post', (SELECT data FROM v_post WHERE id = v_old.id),
                                    false, 'nothing to change');
    END IF;
    UPDATE tb_post
       SET title = coalesce(input ->> 'title', title),
           body = coalesce(input ->> 'body', body),
           published = coalesce((input ->> 'published')::boolean, published)
     WHERE pk_post = v_old.pk_post;
    RETURN fraiseql.mutation_ok(v_old.id, 'Post', (SELECT data FROM v_post WHERE id = v_old.id),
                                true, 'post updated', v_changed);
END;
$$;

-- deletePost(id: UUID!): flattened arguments (the engine passes `p_id => ...`).
CREATE FUNCTION fn_delete_post(p_id uuid) RETURNS fraiseql.mutation_response
LANGUAGE plpgsql AS $$
DECLARE
    v_data jsonb;
BEGIN
    SELECT data INTO v_data FROM v_post WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN fraiseql.mutation_err('NOT_FOUND', 'no post with this id');
    END IF;
    DELETE FROM tb_post WHERE id = p_id;
    RETURN fraiseql.mutation_ok(p_id, 'Post', v_data, true, 'post deleted');
END;
$$;

SELECT fraiseql.track_changes('tb_user', 'User');
SELECT fraiseql.track_changes('tb_post', 'Post');
SELECT fraiseql.track_changes('tb_comment', 'Comment');
