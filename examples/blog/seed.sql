-- Deterministic demo data: 50 users × 3 posts × 2 comments. The integration tests build the
-- same rows from the same formulas (tests/common/mod.rs, `Seed::blog`).

INSERT INTO tb_user (id, identifier, name, email, role, score, metadata, created_at)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
       'user-' || lpad(n::text, 2, '0'),
       'User ' || lpad(n::text, 2, '0'),
       CASE WHEN n % 5 = 0 THEN NULL ELSE 'user' || lpad(n::text, 2, '0') || '@example.com' END,
       CASE WHEN n % 10 = 0 THEN 'admin' WHEN n % 3 = 0 THEN 'author' ELSE 'reader' END,
       n::bigint * 1000000000,
       CASE WHEN n % 2 = 0 THEN jsonb_build_object('n', n) END,
       timestamptz '2024-01-01 00:00:00+00' + n * interval '1 day'
  FROM generate_series(1, 50) AS n
 ORDER BY n;

INSERT INTO tb_post (id, fk_user, title, body, published, views, rating, tags, created_at)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(p), 12, '0'))::uuid,
       u.pk_user,
       'Post ' || p || ' by ' || u.identifier,
       'Body of post ' || p || CASE WHEN p % 7 = 0 THEN ' with 100% _special_ chars' ELSE '' END,
       p % 2 = 0,
       (p * 37) % 1000,
       CASE WHEN p % 4 = 0 THEN NULL ELSE (p % 50) / 10.0 END,
       ARRAY['tag' || (p % 3), 'all'],
       timestamptz '2024-02-01 00:00:00+00' + p * interval '1 hour'
  FROM generate_series(1, 150) AS p
  JOIN tb_user u ON u.identifier = 'user-' || lpad(((p - 1) / 3 + 1)::text, 2, '0')
 ORDER BY p;

INSERT INTO tb_comment (id, fk_post, fk_user, body, created_at)
SELECT ('00000000-0000-4000-a000-' || lpad(to_hex(c), 12, '0'))::uuid,
       tp.pk_post,
       tu.pk_user,
       'Comment ' || c || ' on post ' || ((c - 1) / 2 + 1),
       timestamptz '2024-03-01 00:00:00+00' + c * interval '1 minute'
  FROM generate_series(1, 300) AS c
  JOIN tb_post tp ON tp.id = ('00000000-0000-4000-9000-' || lpad(to_hex((c - 1) / 2 + 1), 12, '0'))::uuid
  JOIN tb_user tu ON tu.identifier = 'user-' || lpad(((((c - 1) / 2 + 1) + c) % 50 + 1)::text, 2, '0')
 ORDER BY c;
