import 'reflect-metadata';
import { loadSchedulerConfig, runApp } from '@app/common';
import { SchedulerModule } from './scheduler.module';

void runApp({ name: 'scheduler', loadConfig: loadSchedulerConfig, module: (config) => SchedulerModule.forRoot(config) });
