-- Table-backed copies of the blog's views (tv_*): the same `id` and `data jsonb` as v_user,
-- v_post and v_comment, stored, so reads cost an index lookup instead of building nested JSON
-- for every row. Triggers on the tb_ tables keep them current in the same transaction.
-- Point the schema at them with `"sql_source": "tv_user"` (bench/graphql_bench.py does).
-- Requires examples/blog/schema.sql.

CREATE TABLE tv_comment (id uuid PRIMARY KEY, data jsonb NOT NULL);
CREATE TABLE tv_post    (id uuid PRIMARY KEY, data jsonb NOT NULL);
CREATE TABLE tv_user    (id uuid PRIMARY KEY, data jsonb NOT NULL);

-- Recomputes the given rows and everything that embeds them: a comment is embedded in its
-- post, a post in its author; a user (as author) in their posts and comments.
CREATE FUNCTION tv_blog_refresh(p_users bigint[], p_posts bigint[], p_comments bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_users uuid[];
    v_posts uuid[];
    v_comments uuid[];
BEGIN
    -- A user's name appears in their posts and comments.
    p_posts := p_posts || ARRAY(SELECT pk_post FROM tb_post WHERE fk_user = ANY(p_users));
    p_comments := p_comments || ARRAY(SELECT pk_comment FROM tb_comment WHERE fk_user = ANY(p_users));
    -- A comment appears in its post; a post in its author.
    p_posts := p_posts || ARRAY(SELECT fk_post FROM tb_comment WHERE pk_comment = ANY(p_comments));
    p_users := p_users || ARRAY(SELECT fk_user FROM tb_post WHERE pk_post = ANY(p_posts));

    v_users := ARRAY(SELECT id FROM tb_user WHERE pk_user = ANY(p_users));
    v_posts := ARRAY(SELECT id FROM tb_post WHERE pk_post = ANY(p_posts));
    v_comments := ARRAY(SELECT id FROM tb_comment WHERE pk_comment = ANY(p_comments));

    INSERT INTO tv_comment SELECT id, data FROM v_comment WHERE id = ANY(v_comments)
        ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data;
    INSERT INTO tv_post SELECT id, data FROM v_post WHERE id = ANY(v_posts)
        ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data;
    INSERT INTO tv_user SELECT id, data FROM v_user WHERE id = ANY(v_users)
        ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data;
END;
$$;

CREATE FUNCTION tv_blog_on_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM tv_user WHERE id = OLD.id;
    ELSE
        PERFORM tv_blog_refresh(ARRAY[NEW.pk_user], '{}', '{}');
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION tv_blog_on_post() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM tv_post WHERE id = OLD.id;
        DELETE FROM tv_comment c WHERE NOT EXISTS (SELECT 1 FROM tb_comment t WHERE t.id = c.id);
        PERFORM tv_blog_refresh(ARRAY[OLD.fk_user], '{}', '{}');
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM tv_blog_refresh(ARRAY[OLD.fk_user], ARRAY[NEW.pk_post], '{}');
    ELSE
        PERFORM tv_blog_refresh('{}', ARRAY[NEW.pk_post], '{}');
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION tv_blog_on_comment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM tv_comment WHERE id = OLD.id;
        PERFORM tv_blog_refresh('{}', ARRAY[OLD.fk_post], '{}');
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM tv_blog_refresh('{}', ARRAY[OLD.fk_post], ARRAY[NEW.pk_comment]);
    ELSE
        PERFORM tv_blog_refresh('{}', '{}', ARRAY[NEW.pk_comment]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tv_blog_user AFTER INSERT OR UPDATE OR DELETE ON tb_user
    FOR EACH ROW EXECUTE FUNCTION tv_blog_on_user();
CREATE TRIGGER tv_blog_post AFTER INSERT OR UPDATE OR DELETE ON tb_post
    FOR EACH ROW EXECUTE FUNCTION tv_blog_on_post();
CREATE TRIGGER tv_blog_comment AFTER INSERT OR UPDATE OR DELETE ON tb_comment
    FOR EACH ROW EXECUTE FUNCTION tv_blog_on_comment();

-- Rows that exist already.
INSERT INTO tv_comment SELECT id, data FROM v_comment ON CONFLICT (id) DO NOTHING;
INSERT INTO tv_post SELECT id, data FROM v_post ON CONFLICT (id) DO NOTHING;
INSERT INTO tv_user SELECT id, data FROM v_user ON CONFLICT (id) DO NOTHING;
