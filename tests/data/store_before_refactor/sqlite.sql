BEGIN TRANSACTION;
CREATE TABLE changes (
    change_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    at TEXT NOT NULL,
    by TEXT NOT NULL,
    what TEXT NOT NULL
);
INSERT INTO "changes" VALUES('c27c30db7d6749fe914d7564bc379a4c','cab002','2026-11-30T04:57:29.025967Z','admin api','{"credits_per_game": {"from": 1, "to": 2}, "timezone": {"from": "UTC", "to": "Europe/Paris"}}');
INSERT INTO "changes" VALUES('9717c2264bff46f5a4d0dd4b351a34ec','*','2026-11-30T04:57:29.098268Z','admin api','{"plan_version": 1}');
INSERT INTO "changes" VALUES('78ffaf608d174f39ab69f4433ac19f2d','cab002','2026-11-30T04:57:29.121565Z','admin api','{"plan_version": 1}');
CREATE TABLE game_over_keys (
    machine_id TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, key)
);
INSERT INTO "game_over_keys" VALUES('cab001','cab001-upgrade-game-1','2026-11-30T04:57:30.021922Z','2026-12-01T04:57:30.021922Z',1);
CREATE TABLE intents (
    payment_intent TEXT PRIMARY KEY,
    payment_id TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    disputed_at TEXT,
    updated_at TEXT,
    version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "intents" VALUES('pi_upgrade_delivered','cs_upgrade_delivered',0,NULL,'2026-11-30T04:57:29.078775Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_refunded','cs_upgrade_refunded',0,NULL,'2026-11-30T04:57:29.084815Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_disputed','cs_upgrade_disputed',0,NULL,'2026-11-30T04:57:29.087838Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_unattributed','cs_upgrade_unattributed',0,NULL,'2026-11-30T04:57:29.090204Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_early',NULL,50,NULL,'2026-11-30T04:57:29.090898Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_bundle','cs_upgrade_bundle',0,NULL,'2026-11-30T04:57:30.011576Z',1);
INSERT INTO "intents" VALUES('pi_upgrade_pending','cs_upgrade_pending',0,NULL,'2026-11-30T04:57:30.142061Z',1);
CREATE TABLE kept_values (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO "kept_values" VALUES('pulse_signing_key','TFygMLMWzhPzKn3S-5Pn0GtQZx5cyUa4GrB0GXOQwXw');
CREATE TABLE machine_states (
    machine_id TEXT PRIMARY KEY,
    credits_granted INTEGER NOT NULL DEFAULT 0,
    credits_used INTEGER NOT NULL DEFAULT 0,
    games_without_credit INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    session_started_at TEXT,
    revenue TEXT NOT NULL DEFAULT '{}',
    version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "machine_states" VALUES('cab001',25,1,0,'gs_42b371c15461478b82ba97acc7c2b362','2026-11-30T04:57:30.021922Z','{"usd":700}',7);
INSERT INTO "machine_states" VALUES('cab002',3,0,0,NULL,NULL,'{"usd":200}',2);
CREATE TABLE machines (
    machine_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    name TEXT,
    price_id TEXT,
    credits_per_unit INTEGER,
    last_seen TEXT,
    mqtt_connected INTEGER,
    credits_reported INTEGER,
    links_active INTEGER,
    credits_per_game INTEGER,
    timezone TEXT
);
INSERT INTO "machines" VALUES('cab001','a69127088d07b0fcbb3f18df1bd5c5057b6f8910637bcc95c696496207dd8998','2026-11-30T04:57:29.003956Z','Front door',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "machines" VALUES('cab002','c8bed0f7c5b2d5f19fb95c0e254ed4e844525cf0e29d3f0762d01051020346c8','2026-11-30T04:57:29.008334Z','Back room','price_back_room',NULL,'2026-11-30T04:57:29.091406Z',1,2,NULL,2,'Europe/Paris');
CREATE TABLE payment_links (
    link_key TEXT PRIMARY KEY,
    link_id TEXT NOT NULL UNIQUE,
    machine_id TEXT NOT NULL,
    price_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    url TEXT NOT NULL,
    unit_amount INTEGER,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
INSERT INTO "payment_links" VALUES('cab001|price_default_credit|0','plink_G2mXKN20aetDxDICqGWl53eE','cab001','price_default_credit',0,'https://buy.stripe.com/test_Ne9QRErpOg0SX1?client_reference_id=cab001',50,'usd','2026-11-30T04:57:29.049916Z',NULL);
INSERT INTO "payment_links" VALUES('cab001|price_default_credit|2','plink_owBtp7ReNFBxV6LPVu3aVkar','cab001','price_default_credit',2,'https://buy.stripe.com/test_vFL0Gi0f2qotYp?client_reference_id=cab001',50,'usd','2026-11-30T04:57:29.054690Z',NULL);
INSERT INTO "payment_links" VALUES('cab002|price_back_room|0','plink_lGSL7cn33KMdnOgZvcwyF6Hw','cab002','price_back_room',0,'https://buy.stripe.com/test_VglZDt6fA2KfDB?client_reference_id=cab002',100,'usd','2026-11-30T04:57:29.058936Z','2026-11-30T04:57:29.109929Z');
INSERT INTO "payment_links" VALUES('cab001|price_gm9pxblGAof2NU3vLDdPa5kq|0','plink_jm07t9Nf9BfMdZqvfANTrMnp','cab001','price_gm9pxblGAof2NU3vLDdPa5kq',0,'https://buy.stripe.com/test_6nAosxa89BCyMV?client_reference_id=cab001',200,'usd','2026-11-30T04:57:29.109574Z',NULL);
INSERT INTO "payment_links" VALUES('cab002|price_default_credit|0','plink_aa0c5KtjIorvf8yRjcbtIWZJ','cab002','price_default_credit',0,'https://buy.stripe.com/test_svSRloPKYAF0wj?client_reference_id=cab002',50,'usd','2026-11-30T04:57:29.116091Z','2026-11-30T04:57:29.121717Z');
INSERT INTO "payment_links" VALUES('cab002|price_gm9pxblGAof2NU3vLDdPa5kq|0','plink_GmLxzLLQyIZAbDuxZb5VHB8Q','cab002','price_gm9pxblGAof2NU3vLDdPa5kq',0,'https://buy.stripe.com/test_etcMEwf5R2pwNb?client_reference_id=cab002',200,'usd','2026-11-30T04:57:29.118743Z','2026-11-30T04:57:29.123906Z');
INSERT INTO "payment_links" VALUES('cab002|price_THVcY0iXENeozmlmEt3mHm9D|0','plink_geM8V7ky3aoHeNmuvwQ70yqx','cab002','price_THVcY0iXENeozmlmEt3mHm9D',0,'https://buy.stripe.com/test_qTSrdDvild71QV?client_reference_id=cab002',100,'usd','2026-11-30T04:57:29.129468Z',NULL);
CREATE TABLE payments (
    payment_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    machine_id TEXT,
    credits INTEGER NOT NULL DEFAULT 0,
    amount INTEGER NOT NULL DEFAULT 0,
    currency TEXT NOT NULL DEFAULT 'usd',
    payment_intent TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0,
    granted_at TEXT,
    delivered_at TEXT,
    delivery_claimed_until TEXT,
    updated_at TEXT,
    phase TEXT,
    reason TEXT,
    disputed_at TEXT,
    due_at TEXT,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    delivery_alarm_at TEXT,
    credited_at TEXT,
    note TEXT,
    bundle TEXT,
    plan_version INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "payments" VALUES('cs_upgrade_delivered','delivered','2026-11-30T04:57:29.000000Z','cab001',2,100,'usd','pi_upgrade_delivered',0,'2026-11-30T04:57:29.078775Z','2026-11-30T04:57:29.083531Z',NULL,'2026-11-30T04:57:29.083531Z','paid',NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,NULL,2);
INSERT INTO "payments" VALUES('cs_upgrade_refunded','refunded','2026-11-30T04:57:29.000000Z','cab001',1,50,'usd','pi_upgrade_refunded',50,'2026-11-30T04:57:29.084815Z','2026-11-30T04:57:29.085512Z',NULL,'2026-11-30T04:57:29.086775Z','paid',NULL,NULL,NULL,0,NULL,NULL,NULL,NULL,NULL,3);
INSERT INTO "payments" VALUES('cs_upgrade_disputed','disputed','2026-11-30T04:57:29.000000Z','cab002',1,100,'usd','pi_upgrade_disputed',0,'2026-11-30T04:57:29.087838Z','2026-11-30T04:57:29.088681Z',NULL,'2026-11-30T04:57:29.089451Z','paid',NULL,'2026-11-30T04:57:29.089451Z',NULL,0,NULL,NULL,NULL,NULL,NULL,3);
INSERT INTO "payments" VALUES('cs_upgrade_unattributed','unattributed','2026-11-30T04:57:29.000000Z',NULL,0,50,'usd','pi_upgrade_unattributed',0,'2026-11-30T04:57:29.090204Z',NULL,NULL,'2026-11-30T04:57:29.090204Z','paid','machine cab999 is not registered',NULL,NULL,0,NULL,NULL,NULL,NULL,NULL,1);
INSERT INTO "payments" VALUES('cs_upgrade_bundle','delivered','2026-11-30T04:57:30.000000Z','cab001',19,600,'usd','pi_upgrade_bundle',0,'2026-11-30T04:57:30.011576Z','2026-11-30T04:57:30.012792Z',NULL,'2026-11-30T04:57:30.012792Z','paid',NULL,NULL,NULL,0,NULL,NULL,NULL,'5 games',1,2);
INSERT INTO "payments" VALUES('manual_0c73fec69eca61945c7fdb93f8fa70f4','delivered','2026-11-30T04:57:30.020190Z','cab001',3,0,'usd',NULL,0,'2026-11-30T04:57:30.020190Z','2026-11-30T04:57:30.021130Z',NULL,'2026-11-30T04:57:30.021130Z','paid',NULL,NULL,NULL,0,NULL,NULL,'coin mech jammed',NULL,NULL,2);
INSERT INTO "payments" VALUES('cs_upgrade_pending','pending_delivery','2026-11-30T04:57:30.000000Z','cab002',2,100,'usd','pi_upgrade_pending',0,'2026-11-30T04:57:30.142061Z',NULL,NULL,'2026-11-30T04:57:30.142061Z','paid',NULL,NULL,'2026-11-30T04:57:32.144166Z',1,NULL,NULL,NULL,'2 games',1,2);
CREATE TABLE plan_versions (
    owner TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    plan TEXT NOT NULL,
    PRIMARY KEY (owner, version)
);
INSERT INTO "plan_versions" VALUES('*',1,'2026-11-30T04:57:29.098019Z','admin api','{"bonuses":[{"credits":1,"min_units":3}],"bundles":[{"credits":1,"currency":"usd","name":"1 game","price_id":"price_default_credit","unit_amount":50},{"credits":6,"currency":"usd","name":"5 games","price_id":"price_gm9pxblGAof2NU3vLDdPa5kq","unit_amount":200}],"happy_hours":[]}');
INSERT INTO "plan_versions" VALUES('cab002',1,'2026-11-30T04:57:29.121433Z','admin api','{"bonuses":[],"bundles":[{"credits":2,"currency":"usd","name":"2 games","price_id":"price_THVcY0iXENeozmlmEt3mHm9D","unit_amount":100}],"happy_hours":[{"days":["sat","sun"],"end":"19:00","extra":null,"factor":2,"start":"17:00"}]}');
CREATE TABLE revenue_entries (
    entry_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    gross INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    bundle TEXT,
    credits INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_delivered#1#sale','2026-11-30T04:57:29.000000Z','cab001','cs_upgrade_delivered','usd',100,0,NULL,2);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_refunded#1#sale','2026-11-30T04:57:29.000000Z','cab001','cs_upgrade_refunded','usd',50,0,NULL,1);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_refunded#3#refund','2026-11-30T04:57:29.086775Z','cab001','cs_upgrade_refunded','usd',0,50,NULL,0);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_disputed#1#sale','2026-11-30T04:57:29.000000Z','cab002','cs_upgrade_disputed','usd',100,0,NULL,1);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_bundle#1#sale','2026-11-30T04:57:30.000000Z','cab001','cs_upgrade_bundle','usd',600,0,'5 games',19);
INSERT INTO "revenue_entries" VALUES('cs_upgrade_pending#1#sale','2026-11-30T04:57:30.000000Z','cab002','cs_upgrade_pending','usd',100,0,'2 games',2);
CREATE INDEX payments_by_machine ON payments (machine_id, created_at);
CREATE INDEX payments_by_intent ON payments (payment_intent);
CREATE INDEX payment_links_by_machine ON payment_links (machine_id);
CREATE INDEX changes_by_subject ON changes (subject, at);
CREATE INDEX revenue_by_time ON revenue_entries (at);
CREATE INDEX payments_due ON payments (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX payments_by_time ON payments (created_at, payment_id);
CREATE INDEX payments_by_status ON payments (status, created_at, payment_id);
CREATE INDEX intents_unmatched ON intents (updated_at) WHERE payment_id IS NULL;
COMMIT;
