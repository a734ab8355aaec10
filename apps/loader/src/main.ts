import 'reflect-metadata';
import { loadLoaderConfig, runApp } from '@app/common';
import { LoaderModule } from './loader.module';

void runApp({ name: 'loader', loadConfig: loadLoaderConfig, module: (config) => LoaderModule.forRoot(config) });
