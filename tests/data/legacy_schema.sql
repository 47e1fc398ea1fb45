-- The schema the service created before it had migrations (`scripts.create_tables` up to
-- the commit that introduced migrations), as pg_dump printed it. Tests build it to prove
-- that migrating such a database keeps every row and value.
CREATE TABLE users (
    id bigint NOT NULL,
    username character varying(32) NOT NULL COLLATE pg_catalog."C",
    email character varying(254),
    full_name character varying(200),
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE SEQUENCE users_id_seq START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;
ALTER SEQUENCE users_id_seq OWNED BY users.id;
ALTER TABLE ONLY users ALTER COLUMN id SET DEFAULT nextval('users_id_seq'::regclass);
ALTER TABLE ONLY users ADD CONSTRAINT users_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX user_username ON users USING btree (username);
CREATE UNIQUE INDEX users_email_lower ON users USING btree (lower((email)::text));
