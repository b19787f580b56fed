/** Writes the chart's spec-fields admission policy (src/api/spec-fields-policy.ts); part of `npm run crds`. */
import { writeFile } from 'node:fs/promises';
import { SPEC_FIELDS_TEMPLATE, specFieldsPolicyTemplate } from '../src/api/spec-fields-policy.js';

await writeFile(SPEC_FIELDS_TEMPLATE, specFieldsPolicyTemplate());
process.stderr.write(`wrote ${SPEC_FIELDS_TEMPLATE}\n`);
