// Reads an introspection result (the JSON body of the GraphiQL introspection query) from
// the file given as argument, builds a client schema with graphql-js and validates it.
// Prints the SDL on success; exits non-zero with the errors otherwise.
const fs = require('fs');
const { buildClientSchema, printSchema, validateSchema, getIntrospectionQuery } = require('graphql');

if (process.argv[2] === '--query') {
  process.stdout.write(getIntrospectionQuery({ descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true }));
  process.exit(0);
}
const body = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
if (body.errors) {
  console.error('introspection returned errors', JSON.stringify(body.errors));
  process.exit(2);
}
const schema = buildClientSchema(body.data);
const errors = validateSchema(schema);
if (errors.length > 0) {
  console.error(errors.map((e) => e.message).join('\n'));
  process.exit(3);
}
process.stdout.write(printSchema(schema));
