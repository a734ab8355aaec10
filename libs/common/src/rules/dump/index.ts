// What a dump does with its rules (masking SQL, the masking key, subsetting, the refusals before
// anything is written): shared by the dumper and by `db-fanout rules check`, which reports the
// same refusals without dumping.
export * from './dump-rules';
export * from './masking-key';
export * from './masking-sql';
export * from './subset-plan';
