// Types of validator.mjs for TypeScript callers (clients/typescript's tests).
export declare const SPEC_PATH: string;
export declare function loadSpec(specPath?: string): any;
export interface Validator {
  schemaNames: string[];
  validate(name: string, value: unknown): string[];
}
export declare function makeValidator(options?: { strict?: boolean; specPath?: string }): Validator;
export declare function responseSchemaName(spec: any, method: string, pathPattern: string, status: number): string | null;
