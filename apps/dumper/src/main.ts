import 'reflect-metadata';
import { runApp } from '@app/common/bootstrap';
import { loadDumperConfig } from '@app/common/config';
import { DumperModule } from './dumper.module';

void runApp({ name: 'dumper', loadConfig: loadDumperConfig, module: (config) => DumperModule.forRoot(config) });
