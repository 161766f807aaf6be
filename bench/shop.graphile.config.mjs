// PostGraphile v5 for bench/shop_bench.py: the amber preset over the shop's tb_ tables
// (examples/shop/schema.sql), relations by their fk_ foreign keys. DATABASE_URL and PORT
// come from the environment; lists and connections both exist (`allTbOrdersList`, ...).
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({ connectionString: process.env.DATABASE_URL, schemas: ["public"] }),
  ],
  grafserv: { port: Number(process.env.PORT ?? 5100), graphiql: false },
  grafast: { explain: false },
  schema: { defaultBehavior: "+list +connection" },
};

export default preset;
