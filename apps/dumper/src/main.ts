import 'reflect-metadata';
import { loadDumperConfig, runApp } from '@app/common';
import { DumperModule } from './dumper.module';

void runApp({ name: 'dumper', loadConfig: loadDumperConfig, module: (config) => DumperModule.forRoot(config) });
